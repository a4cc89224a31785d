"""The loop: a cycle's steps, the runner that makes them durable, selection and state."""
