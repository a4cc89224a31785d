"""A world for running the loop in tests: a real S3 store (moto), a base model that writes
valid networks, a seed corpus, and the four services as real processes on loopback.

The base model is a small Llama pretrained here (≈ 20 s) on two of the grammar's networks until
it has nearly memorised them, so that at a low temperature most of its answers are valid
networks; the seed corpus is drawn from another grammar seed, so those answers are novel
against it. That makes every step of a cycle do real work in seconds: answers are evaluated,
some are novel and selected, an adapter is trained, published and hot-loaded.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s3server import store_env

from nasloop.bootstrap import SIZES, pretrain, publish_model
from nasloop.corpus.build import seed_corpus
from nasloop.corpus.grammar import generate
from nasloop.corpus.records import save_corpus
from nasloop.store import S3Store
from services.local import LocalService, local_services

S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
MODEL = "models/loop"
BUDGET = 200_000  # the parameter budget the two memorised networks were trained under
SIZE = dataclasses.replace(
    SIZES["tiny"], name="loop", vocab_size=1024, hidden_size=96, intermediate_size=256,
    context=1024, max_length=900, lr=5e-3, warmup_steps=5,
)  # fmt: skip
STEPS = 80

# A run of 8 candidates per cycle that the world's services finish in seconds.
SPEC_OVERRIDES = [
    f"base_model={MODEL}",
    "cycles=2",
    "candidates_per_cycle=8",
    "sampling.temperature=0.3",
    "sampling.max_tokens=900",
    f"protocol.max_parameters={BUDGET}",
    "protocol.train_subset=256",
    "protocol.test_subset=200",
    "protocol.time_limit_s=60",
    "protocol.failure_floor=0.0",  # 256 images for one epoch: near chance, still trained
    "selection.min_accuracy=0.0",
    "selection.top_up_to=0",
    "selection.top_up_min_accuracy=0.0",
    "training.lora.r=8",
    "training.lora.alpha=16",
    "training.epochs=1",
    "training.batch_size=4",
]


@dataclass
class LoopWorld:
    store: S3Store
    env: dict[str, str]  # configuration shared by the services and the controller
    root: Path


def build_loop_world(s3_endpoint: str, root: Path) -> LoopWorld:
    bucket = f"loop-{uuid.uuid4().hex[:12]}"
    store = S3Store(s3_endpoint, bucket, **S3_CREDENTIALS)
    nets = generate(36, seed=0)
    codes = [nets[35].code, nets[0].code]  # short ones, both with a 200k parameter budget
    result = pretrain(codes, root / "pretrain", SIZE, steps=STEPS, seed=1, progress=False)
    publish_model(store, MODEL.split("/", 1)[1], result.model_dir)
    save_corpus(store, "seed", seed_corpus(40, seed=7))
    env = {
        **store_env(s3_endpoint, f"s3://{bucket}"),
        "NASLOOP_SERVER__HOST": "127.0.0.1",
        "NASLOOP_SERVER__GRACE_S": "2",
        "NASLOOP_GENERATOR__MODEL": MODEL,
        "NASLOOP_GENERATOR__BACKEND": "transformers",
        "NASLOOP_GENERATOR__CACHE_DIR": str(root / "generator"),
        "NASLOOP_TRAINER__CACHE_DIR": str(root / "trainer"),
        "NASLOOP_TRAINER__LOG_EVERY_STEPS": "1",
        "NASLOOP_EVALUATOR__DATA_DIR": str(root / "evaluator"),
        "NASLOOP_EVALUATOR__WORKERS": "2",
        "NASLOOP_EVALUATOR__MEMORY_BYTES": str(2 << 30),
        "NASLOOP_NOVELTY__FINGERPRINT_WORKERS": "0",
    }
    return LoopWorld(store, env, root)


@contextmanager
def loop_services(world: LoopWorld, logs: Path) -> Iterator[dict[str, LocalService]]:
    with local_services(world.env, logs, timeout_s=300) as services:
        yield services


def controller_env(world: LoopWorld, services: dict[str, LocalService]) -> dict[str, str]:
    """The environment of a controller (or a cycle process) talking to ``services``."""
    return {
        **world.env,
        **{f"NASLOOP_CONTROLLER__{n.upper()}": s.address for n, s in services.items()},
    }
