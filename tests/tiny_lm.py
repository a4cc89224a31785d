"""A tiny Llama model with a byte-level BPE tokenizer, built here for trainer tests.

Real transformers/tokenizers objects, just very small: a stand-in for the bootstrap model where
a test needs a base model in seconds.
"""

from __future__ import annotations

from pathlib import Path

from candidates import GOOD_NET

from nasloop.store import ObjectStore

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def build_tiny_lm(dest: Path, seed: int = 0, vocab_size: int = 400) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([GOOD_NET, "Task: design a network.\n```python\n```"] * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=fast.vocab_size if len(fast) <= fast.vocab_size else len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def publish_tiny_lm(store: ObjectStore, name: str, workdir: Path, seed: int = 0) -> str:
    """Build the tiny model and publish it as ``models/<name>``; returns the prefix."""
    path = build_tiny_lm(workdir / name, seed)
    files = {p.name: p for p in sorted(path.iterdir()) if p.is_file()}
    store.put_artifact(f"models/{name}", files, {"kind": "test-model"})
    return f"models/{name}"
