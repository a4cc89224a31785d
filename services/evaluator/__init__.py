"""The evaluator: staged validation and sandboxed training of untrusted candidate networks."""
