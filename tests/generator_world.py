"""A base model and adapters in a real S3 store (moto), for the generator's tests and benchmarks.

The base model is the tiny bootstrap LM, trained here in seconds; adapters are peft LoRA
adapters with random (non-zero) weights, so they visibly change the model's outputs, published
as the trainer publishes them (files, then a manifest with the base model's hash).
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from s3server import store_env

from nasloop.artifacts import ADAPTER_FILES
from nasloop.bootstrap import pretrain, publish_model
from nasloop.corpus.grammar import generate
from nasloop.store import ObjectStore, S3Store
from nasloop.v1 import common_pb2 as common

S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
MODEL = "models/tiny"
SPEC = common.TaskSpec(
    task="img-classification",
    dataset="digits",
    in_shape=[16, 3, 32, 32],
    out_shape=[10],
    parameter_budget=200_000,
)


@dataclass
class World:
    store: S3Store
    env: dict[str, str]  # the generator's configuration, as environment variables
    model_dir: Path
    base_sha256: str


def build_world(s3_endpoint: str, root: Path, steps: int = 30) -> World:
    bucket = f"gen-{uuid.uuid4().hex[:12]}"
    store = S3Store(s3_endpoint, bucket, **S3_CREDENTIALS)
    codes = [net.code for net in generate(24, seed=0)]
    result = pretrain(codes, root / "bootstrap", "tiny", steps=steps, seed=1, progress=False)
    publish_model(store, MODEL.split("/", 1)[1], result.model_dir)
    base_sha = store.manifest_sha256(MODEL) or ""
    for prefix, rank, seed in (
        ("adapters/a1", 8, 1),
        ("adapters/a2", 8, 2),
        ("adapters/r16", 16, 3),
    ):
        publish_adapter(store, result.model_dir, prefix, rank, seed, base_sha)
    env = {
        **store_env(s3_endpoint, f"s3://{bucket}"),
        "NASLOOP_SERVER__HOST": "127.0.0.1",
        "NASLOOP_SERVER__GRACE_S": "2",
        "NASLOOP_GENERATOR__MODEL": MODEL,
        "NASLOOP_GENERATOR__CACHE_DIR": str(root / "cache"),
        "NASLOOP_GENERATOR__MAX_LORA_RANK": "8",
        "NASLOOP_GENERATOR__MAX_N": "16",
        "NASLOOP_GENERATOR__MAX_CPU_LORAS": "3",
        "NASLOOP_GENERATOR__MAX_CONCURRENT_CALLS": "3",
        "NASLOOP_GENERATOR__KV_CACHE_GIB": "1",
    }
    return World(store, env, result.model_dir, base_sha)


def adapter_files(model_dir: Path, rank: int, seed: int, dest: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,  # random B: the adapter changes outputs from the start
    )
    get_peft_model(model, config).save_pretrained(dest)
    return {name: dest / name for name in ADAPTER_FILES}


def adapter_meta(base_sha256: str, **extra: object) -> dict[str, object]:
    return {"kind": "lora-adapter", "base_model": MODEL, "base_model_sha256": base_sha256, **extra}


def publish_adapter(
    store: ObjectStore, model_dir: Path, prefix: str, rank: int, seed: int, base_sha256: str
) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        files = adapter_files(model_dir, rank, seed, Path(tmp))
        store.put_artifact(prefix, files, adapter_meta(base_sha256, run="test", cycle=seed))
    return store.manifest_sha256(prefix) or ""
