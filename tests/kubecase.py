"""A tiny evaluation case for the cluster-mode tests: a valid candidate, a dataset, a task."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from candidates import GOOD_NET, protocol

from services.evaluator.datasets import DatasetInfo, Prepared
from services.evaluator.task import Task

NUM_CLASSES = 10
TRAIN, TEST = 64, 32


def tiny_dataset_npz(seed: int = 0) -> bytes:
    """A sandbox dataset file (no test labels): uint8 3x32x32 images and the constants."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (TRAIN, 3, 32, 32), dtype=np.uint8),
        "train_y": rng.integers(0, NUM_CLASSES, TRAIN).astype(np.int64),
        "test_x": rng.integers(0, 256, (TEST, 3, 32, 32), dtype=np.uint8),
        "mean": np.full(3, 0.5, dtype=np.float32),
        "std": np.full(3, 0.29, dtype=np.float32),
        "scale": np.array(1.0 / 255.0, dtype=np.float32),
        "num_classes": np.array(NUM_CLASSES, dtype=np.int64),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def tiny_prepared(directory: Path, seed: int = 0, name: str = "tiny") -> Prepared:
    """The tiny dataset as the evaluator prepares one: its sandbox file written under
    ``directory``, test labels kept aside, the digest naming its store key."""
    data = tiny_dataset_npz(seed)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = Path(directory) / f"{name}-{digest}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    labels = np.random.default_rng(seed + 1).integers(0, NUM_CLASSES, TEST).astype(np.int64)
    info = DatasetInfo(name, (3, 32, 32), NUM_CLASSES, TRAIN, TEST)
    return Prepared(info, digest, path, labels)


def make_task(
    candidate_id: str = "run1-cand7",
    code: str = GOOD_NET,
    time_limit_s: float = 60.0,
    dataset: str = "tiny",
    device: str = "cpu",
) -> Task:
    proto = protocol(
        dataset=dataset, dropout=0.0, seed=0, time_limit_s=time_limit_s,
        max_parameters=1_000_000, device=device,
    )  # fmt: skip
    return Task(candidate_id=candidate_id, code=code, protocol=proto)
