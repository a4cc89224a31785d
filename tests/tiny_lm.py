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


def lay_into_hf_cache(model_dir: Path, hf_home: Path, repo_id: str, revision: str = "main") -> Path:
    """Lay a model directory out as the Hugging Face cache under ``hf_home`` holds a download of
    ``repo_id`` (``hub/models--org--name/{blobs,snapshots/<commit>,refs/<revision>}``), so it
    loads by its id offline. Returns the snapshot directory."""
    import hashlib

    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in files:
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        link = snapshot / f.name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


if __name__ == "__main__":
    # python tests/tiny_lm.py HF_HOME REPO_ID: the tiny model in a Hugging Face cache (the image
    # smoke test serves it by its id).
    import sys
    import tempfile

    if len(sys.argv) != 3:
        raise SystemExit("usage: tiny_lm.py HF_HOME REPO_ID")
    with tempfile.TemporaryDirectory() as tmp:
        print(lay_into_hf_cache(build_tiny_lm(Path(tmp) / "model"), Path(sys.argv[1]), sys.argv[2]))
