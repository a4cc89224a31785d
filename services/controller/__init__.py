"""The controller: runs, the cycle state machine, selection, records; cycle Jobs in cluster mode."""
