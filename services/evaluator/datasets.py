"""Datasets for candidate training, and the split of what may enter a sandbox.

A prepared dataset is two files: ``sandbox/<name>-<digest>.npz`` (training inputs and labels,
test inputs, normalisation constants) which sandboxes may read, and ``labels/<name>-<digest>.npy``
(test labels) which only the evaluator reads. Accuracy is computed outside the sandbox.

* ``digits``: scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, so offline),
  upsampled to 3x32x32 by pixel repetition, a fixed 80/20 split.
* ``cifar10``: the standard python-version tarball (``cifar-10-python.tar.gz``), from a local
  path or an object-store key. Its pickles are read by a restricted unpickler that builds only
  plain containers and numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the sandbox's view has no object-store client
    from nasloop.store import ObjectStore

NORMALISATION = "per-channel mean/std of the training split"
MAX_SOURCE_BYTES = 1 << 30
CACHED = 4  # prepared datasets kept in memory (their test labels)
BUILTIN = ("digits", "cifar10")


class DatasetError(ValueError):
    """The dataset is unknown or its source is missing or malformed."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    train_size: int
    test_size: int
    normalisation: str = NORMALISATION


@dataclass(frozen=True)
class Prepared:
    """A dataset ready for sandboxes: the sandbox file, and the test labels kept outside."""

    info: DatasetInfo
    digest: str
    sandbox_file: Path
    test_labels: np.ndarray

    @property
    def key(self) -> str:
        """Object-store key of the sandbox file (for Kubernetes pods)."""
        return f"datasets/{self.info.name}/{self.digest}/sandbox.npz"


def _normalised_split(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, DatasetInfo]:
    """Inputs are uint8 (N, C, H, W); normalisation constants come from the training split."""
    scaled = train_x.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2, 3)).astype(np.float32)
    std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-6).astype(np.float32)
    arrays = {
        "train_x": np.ascontiguousarray(train_x, dtype=np.uint8),
        "train_y": np.ascontiguousarray(train_y, dtype=np.int64),
        "test_x": np.ascontiguousarray(test_x, dtype=np.uint8),
        "mean": mean,
        "std": std,
        "scale": np.array(1.0 / 255.0, dtype=np.float32),
        "num_classes": np.array(num_classes, dtype=np.int64),
    }
    info = DatasetInfo(
        name,
        tuple(train_x.shape[1:]),
        num_classes,
        len(train_x),
        len(test_x),
    )
    return arrays, np.ascontiguousarray(test_y, dtype=np.int64), info


def build_digits() -> tuple[dict[str, np.ndarray], np.ndarray, DatasetInfo]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), 0..16 → 0..255
    big = images.repeat(4, axis=1).repeat(4, axis=2)  # (N, 32, 32)
    x = np.repeat(big[:, None, :, :], 3, axis=1)  # (N, 3, 32, 32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))  # the fixed split
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    return _normalised_split("digits", x[train], y[train], x[test], y[test], 10)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches without running arbitrary code from the file."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in CIFAR-10 batch")


def _cifar_batch(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = tar.extractfile(f"cifar-10-batches-py/{member}")
    except KeyError:
        raise DatasetError(f"CIFAR-10 tarball lacks cifar-10-batches-py/{member}") from None
    if f is None:
        raise DatasetError(f"CIFAR-10 member {member} is not a file")
    try:
        batch = _CifarUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as e:
        raise DatasetError(f"CIFAR-10 member {member} is malformed: {e}") from None
    if len(labels) != len(data) or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"CIFAR-10 member {member} has bad labels")
    return data, labels


def build_cifar10(tarball: bytes) -> tuple[dict[str, np.ndarray], np.ndarray, DatasetInfo]:
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as tar:
            parts = [_cifar_batch(tar, f"data_batch_{i}") for i in range(1, 6)]
            test_x, test_y = _cifar_batch(tar, "test_batch")
    except tarfile.TarError as e:
        raise DatasetError(f"CIFAR-10 source is not a readable tarball: {e}") from None
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return _normalised_split("cifar10", train_x, train_y, test_x, test_y, 10)


def _read_source(source: str, store: ObjectStore | None, allow_local: bool) -> bytes:
    """The source's bytes: a local file (only where the operator configured it) or an object
    under ``datasets/`` in the store (what a request may name)."""
    path = Path(source).expanduser()
    if allow_local and path.is_file():
        if path.stat().st_size > MAX_SOURCE_BYTES:
            raise DatasetError(f"dataset source {source!r} is larger than {MAX_SOURCE_BYTES}")
        return path.read_bytes()
    if store is not None and source.startswith("datasets/") and ".." not in source:
        from nasloop.store import ObjectNotFound, StoreError

        try:
            return store.get_bytes(source)
        except ObjectNotFound:
            pass
        except StoreError as e:
            raise DatasetError(f"dataset source {source!r}: {e}") from None
    where = "a local file or " if allow_local else ""
    raise DatasetError(
        f"dataset source {source!r} is not {where}an object under datasets/ in the store"
    )


def _atomic_write(path: Path, write: Any, mode: int = 0o644) -> None:
    """``mode`` 0644 by default: sandboxes run as another uid and must read sandbox files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DatasetCache:
    """Builds each dataset once per process and keeps its files under ``data_dir``."""

    def __init__(self, data_dir: str | Path, store: ObjectStore | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.sandbox_dir = self.data_dir / "sandbox"
        self.sandbox_dir.mkdir(parents=True, exist_ok=True)  # sandboxes bind it at start
        os.chmod(self.sandbox_dir, 0o755)
        self.store = store
        self._lock = threading.Lock()
        self._building: dict[tuple[str, str], threading.Lock] = {}
        self._prepared: OrderedDict[tuple[str, str], Prepared] = OrderedDict()

    def get(self, name: str, source: str = "", allow_local: bool = True) -> Prepared:
        """The prepared dataset; ``allow_local`` lets ``source`` be a local path."""
        if name not in BUILTIN:
            raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(BUILTIN)}")
        if name == "cifar10" and not source:
            raise DatasetError("cifar10 needs a source: set evaluator.cifar10_source")
        key = (name, source if name != "digits" else "")
        with self._lock:
            if key in self._prepared:
                self._prepared.move_to_end(key)
                return self._prepared[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per dataset; other datasets are not held up
            with self._lock:
                if key in self._prepared:
                    return self._prepared[key]
            prepared = self._prepare(name, source, allow_local)
            with self._lock:
                self._prepared[key] = prepared
                while len(self._prepared) > CACHED:
                    self._prepared.popitem(last=False)
                self._building.pop(key, None)
            return prepared

    def _prepare(self, name: str, source: str, allow_local: bool) -> Prepared:
        if name == "digits":
            arrays, test_y, info = build_digits()
        else:
            arrays, test_y, info = build_cifar10(_read_source(source, self.store, allow_local))
        h = hashlib.sha256()
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(arrays[k].tobytes())
        h.update(test_y.tobytes())
        digest = h.hexdigest()[:16]
        sandbox_file = self.sandbox_dir / f"{name}-{digest}.npz"
        if not sandbox_file.exists():
            _atomic_write(sandbox_file, lambda f: np.savez(f, allow_pickle=False, **arrays))
        labels = self.data_dir / "labels" / f"{name}-{digest}.npy"
        if not labels.exists():
            _atomic_write(labels, lambda f: np.save(f, test_y), mode=0o600)
        os.chmod(labels.parent, 0o700)  # only the evaluator's uid may read test labels
        return Prepared(info, digest, sandbox_file, test_y)


class SandboxData:
    """What a sandbox holds: normalised training tensors and test inputs (never test labels)."""

    def __init__(self, train_x: Any, train_y: Any, test_x: Any, num_classes: int) -> None:
        self.train_x, self.train_y, self.test_x = train_x, train_y, test_x
        self.num_classes = num_classes

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SandboxData:
        import torch

        with np.load(path, allow_pickle=False) as z:
            mean = torch.from_numpy(z["mean"]).view(1, -1, 1, 1)
            std = torch.from_numpy(z["std"]).view(1, -1, 1, 1)
            scale = float(z["scale"])

            def norm(x: np.ndarray) -> torch.Tensor:
                t = torch.from_numpy(x).to(torch.float32).mul_(scale)
                return t.sub_(mean).div_(std).contiguous()

            k = int(z["num_classes"])
            data = cls(norm(z["train_x"]), torch.from_numpy(z["train_y"]), norm(z["test_x"]), k)
        if device != "cpu":
            train_x, train_y, test_x = [
                t.to(device) for t in (data.train_x, data.train_y, data.test_x)
            ]
            data = cls(train_x, train_y, test_x, k)
        return data
