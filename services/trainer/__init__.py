"""The trainer: LoRA SFT on prompt→code pairs, published to the object store as adapters."""
