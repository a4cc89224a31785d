"""The controller's commands on the CLI: run, runs, status, report, cycle."""
