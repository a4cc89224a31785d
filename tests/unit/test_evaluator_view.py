"""The strict view's allow-list follows requirements with their extras (real metadata files)."""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Callable
from pathlib import Path

from services.evaluator.view import closure


def _dist(site: Path, name: str, *requires: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def _finder(site: Path) -> Callable[[str], md.Distribution]:
    def find(name: str) -> md.Distribution:
        for dist in md.distributions(path=[str(site)]):
            if dist.metadata["Name"].lower() == name:
                return dist
        raise md.PackageNotFoundError(name)

    return find


def test_extras_asked_for_bring_their_requirements(tmp_path: Path) -> None:
    # As CUDA torch asks for cuda-toolkit[cublas]: the nvidia library is declared only under
    # cuda-toolkit's "cublas" extra, so reading markers without extras would leave it out.
    _dist(tmp_path, "torch", "cuda-toolkit[cublas]; platform_system != 'Nowhere'", "filelock")
    _dist(
        tmp_path, "cuda-toolkit", "nvidia-cublas; extra == 'cublas'", "nvidia-nccl; extra == 'nccl'"
    )
    _dist(tmp_path, "nvidia-cublas")
    _dist(tmp_path, "nvidia-nccl")
    _dist(tmp_path, "filelock")
    names = [d.metadata["Name"] for d in closure(("torch",), _finder(tmp_path))]
    assert names == ["cuda-toolkit", "filelock", "nvidia-cublas", "torch"]


def test_refused_and_missing_distributions_stay_out(tmp_path: Path) -> None:
    _dist(tmp_path, "numpy", "scikit-learn", "not-installed-anywhere")
    _dist(tmp_path, "scikit-learn")
    names = [d.metadata["Name"] for d in closure(("numpy",), _finder(tmp_path))]
    assert names == ["numpy"]
