"""The generator service: a code LLM (vLLM, or transformers + peft) with hot-swapped LoRA."""
