"""A small tarball in the CIFAR-10 python format (same members, pickles and keys), made here.

The real dataset cannot be downloaded on the test machines; this one has the real layout with
few, random images, so the loader's code path is the same.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


def _batch(rng: np.random.Generator, n: int) -> bytes:
    labels = (np.arange(n) % 10).tolist()
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    # A class-dependent brightness so that a network can learn something.
    data = np.clip(data // 2 + np.array(labels, dtype=np.uint8)[:, None] * 12, 0, 255)
    return pickle.dumps({b"batch_label": b"fake", b"labels": labels, b"data": data}, protocol=2)


def write_cifar_tarball(path: Path, per_batch: int = 40, test: int = 50, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    members = {f"data_batch_{i}": _batch(rng, per_batch) for i in range(1, 6)}
    members["test_batch"] = _batch(rng, test)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_malicious_tarball(path: Path) -> Path:
    """A CIFAR-shaped tarball whose first batch would run a command when unpickled."""

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("touch /tmp/nasloop-pwned-by-pickle",))

    payload = pickle.dumps({b"data": Evil(), b"labels": [0]})
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path
