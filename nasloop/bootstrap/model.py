"""The bootstrap LM: sizes, the Llama config, the store artifact and sampling."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from nasloop import layout
from nasloop.prompts import encode_prompt, render_prompt
from nasloop.store.base import MANIFEST, ObjectNotFound, ObjectStore, join_key, sha256_hex
from nasloop.v1 import common_pb2


@dataclass(frozen=True)
class Size:
    """Model shape and training settings of one preset size."""

    name: str
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate_size: int
    context: int  # max_position_embeddings: what the generator may ask for
    max_length: int  # longest training sequence (prompt + answer + eos)
    networks: int  # corpus size
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    checkpoint_every: int
    # Shares of the training pairs that carry a parent (pretrain.corpus_pairs): the answer a
    # whole improved module (full) or a unified diff of the parent (diff); the rest are plain.
    edit_full_share: float = 0.0
    edit_diff_share: float = 0.0


_DEFAULT = Size(
    name="default",
    vocab_size=4096,
    hidden_size=256,
    layers=5,
    heads=4,
    kv_heads=4,
    intermediate_size=704,
    context=2048,
    max_length=640,
    networks=2000,
    steps=700,
    batch_size=16,
    lr=3e-3,
    warmup_steps=40,
    checkpoint_every=25,
)
# Each other size states what differs from the default.
SIZES: dict[str, Size] = {
    "tiny": replace(
        _DEFAULT,
        name="tiny",
        vocab_size=384,
        hidden_size=64,
        layers=2,
        heads=2,
        kv_heads=2,
        intermediate_size=192,
        max_length=1792,
        networks=32,
        steps=40,
        batch_size=4,
        warmup_steps=4,
        checkpoint_every=10,
    ),
    "default": _DEFAULT,
    # The default's shape with edit pairs (``search.strategy: archive`` offline): 30 % of the
    # pairs show a parent, batch 12 for about the default's tokens per step. It writes plain
    # answers less well than the default (docs/benchmarks.md, issue 22), so the local preset
    # keeps the default.
    "edit": replace(
        _DEFAULT, name="edit", batch_size=12, edit_full_share=0.15, edit_diff_share=0.15
    ),
}

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")


def model_prefix(name: str) -> str:
    return layout.model_prefix(name)


def build_model(size: Size, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A freshly initialised Llama (seed torch first for a deterministic init)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=size.context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.8,
        top_k=0,
        top_p=1.0,
    )
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def publish_model(
    store: ObjectStore, name: str, model_dir: Path, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload every file of the Hugging Face directory to ``models/<name>/`` (manifest last)."""
    files = {p.name: p for p in sorted(Path(model_dir).iterdir()) if p.is_file()}
    missing = [f for f in MODEL_FILES if f not in files]
    if missing or "tokenizer.json" not in files:
        raise FileNotFoundError(f"{model_dir} is not a complete model directory: {missing}")
    return store.put_artifact(model_prefix(name), files, meta)


def fetch_model(store: ObjectStore, name: str, dest: str | Path) -> Path:
    """Download ``models/<name>/`` into ``dest`` (verifying every file against the manifest).

    Files already in ``dest`` with the right hash are kept; the manifest is written last, as
    ``manifest.json`` (its SHA-256 identifies the base model, e.g. for adapters).
    """
    prefix = model_prefix(name)
    try:
        raw = store.get_bytes(join_key(prefix, MANIFEST))
    except ObjectNotFound:
        raise ObjectNotFound(f"no model {name!r} in the store (no {prefix}/{MANIFEST})") from None
    manifest = json.loads(raw)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for fname, entry in sorted(manifest["files"].items()):
        path = dest / fname
        if path.is_file() and sha256_hex(path.read_bytes()) == entry["sha256"]:
            continue
        data = store.get_artifact_file(prefix, fname, manifest)
        tmp = path.with_name(f".{fname}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
    (dest / MANIFEST).write_bytes(raw)
    return dest


@torch.no_grad()
def sample(
    model_dir: str | Path,
    specs: Sequence[common_pb2.TaskSpec],
    n: int,
    temperature: float = 0.8,
    seed: int = 0,
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    top_p: float = 1.0,
) -> list[str]:
    """``n`` answers per spec (in spec order) from the model in ``model_dir``, plain template.

    Deterministic for a seed on one machine. The answers are the decoded new tokens.
    """
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    context = model.config.max_position_embeddings
    prompts = [encode_prompt(tok, render_prompt(s, "plain")) for s in specs for _ in range(n)]
    torch.manual_seed(seed)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=0,
            top_p=top_p,
            max_new_tokens=max_new_tokens or context - width,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        out += tok.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out
