"""nasloop: LLM-driven neural architecture design in a closed loop."""

__version__ = "0.1.0"
