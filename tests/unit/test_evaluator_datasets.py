"""Datasets: digits (bundled with scikit-learn) and CIFAR-10 from a tarball in its format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fake import write_cifar_tarball, write_malicious_tarball

from nasloop.store import LocalStore
from services.evaluator.datasets import DatasetCache, DatasetError, SandboxData


def test_digits_is_fixed_normalised_and_keeps_test_labels_out(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path)
    p = cache.get("digits")
    assert p.info.image_shape == (3, 32, 32)
    assert (p.info.train_size, p.info.test_size, p.info.num_classes) == (1438, 359, 10)
    again = DatasetCache(tmp_path / "other").get("digits")
    assert again.digest == p.digest  # the split and the preparation are deterministic
    with np.load(p.sandbox_file, allow_pickle=False) as z:
        assert "test_y" not in z.files and len(z["test_x"]) == 359
        assert set(z.files) == {"train_x", "train_y", "test_x", "mean", "std", "scale",
                                "num_classes"}  # fmt: skip
    assert "labels" not in str(p.sandbox_file.parent)
    labels_dir = tmp_path / "labels"
    assert labels_dir.stat().st_mode & 0o777 == 0o700  # only the evaluator's uid
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in labels_dir.iterdir())
    data = SandboxData.load(p.sandbox_file)
    assert data.train_x.dtype == torch.float32 and data.train_x.shape == (1438, 3, 32, 32)
    # Per-channel mean/std of the training split: the training inputs are standardised.
    assert data.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (data.train_x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    assert sorted(set(p.test_labels.tolist())) == list(range(10))


def test_cifar10_from_a_local_tarball(tmp_path: Path) -> None:
    tarball = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=20, test=30)
    p = DatasetCache(tmp_path / "cache").get("cifar10", str(tarball))
    assert (p.info.train_size, p.info.test_size, p.info.image_shape) == (100, 30, (3, 32, 32))
    assert p.test_labels.tolist() == [i % 10 for i in range(30)]
    data = SandboxData.load(p.sandbox_file)
    assert data.num_classes == 10 and data.test_x.shape == (30, 3, 32, 32)


def test_cifar10_from_the_object_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    tarball = write_cifar_tarball(tmp_path / "c.tar.gz", per_batch=10, test=10)
    store.put_bytes("datasets/cifar10/cifar-10-python.tar.gz", tarball.read_bytes())
    p = DatasetCache(tmp_path / "cache", store).get(
        "cifar10", "datasets/cifar10/cifar-10-python.tar.gz"
    )
    assert p.info.train_size == 50


def test_a_request_may_not_name_a_local_file(tmp_path: Path) -> None:
    tarball = write_cifar_tarball(tmp_path / "c.tar.gz", per_batch=10, test=10)
    store = LocalStore(tmp_path / "store")
    cache = DatasetCache(tmp_path / "cache", store)
    with pytest.raises(DatasetError, match="not an object under datasets/"):
        cache.get("cifar10", str(tarball), allow_local=False)
    with pytest.raises(DatasetError, match="not an object under datasets/"):
        cache.get("cifar10", "models/../datasets/x", allow_local=False)
    store.put_bytes("datasets/c.tar.gz", tarball.read_bytes())
    assert cache.get("cifar10", "datasets/c.tar.gz", allow_local=False).info.train_size == 50


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    evil = write_malicious_tarball(tmp_path / "evil.tar.gz")
    with pytest.raises(DatasetError, match="forbidden global"):
        DatasetCache(tmp_path / "cache").get("cifar10", str(evil))
    assert not Path("/tmp/nasloop-pwned-by-pickle").exists()


@pytest.mark.parametrize(
    ("name", "source", "fragment"),
    [
        ("imagenet", "", "unknown dataset"),
        ("cifar10", "", "needs a source"),
        ("cifar10", "/nonexistent/cifar.tar.gz", "not a local file or an object under datasets/"),
    ],
)
def test_bad_dataset_requests(tmp_path: Path, name: str, source: str, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        DatasetCache(tmp_path).get(name, source)


def test_a_file_that_is_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(DatasetError, match="tarball"):
        DatasetCache(tmp_path / "cache").get("cifar10", str(junk))
