"""deploy/images/requirements.py: what each image's dependency stage installs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "images" / "requirements.py"
DOCKERFILE = ROOT / "deploy" / "images" / "Dockerfile"


def requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / "pyproject.toml"), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.splitlines()


def test_extras_expand_with_the_core_dependencies() -> None:
    reqs = requirements("evaluator")
    assert any(r.startswith("grpcio==") for r in reqs)  # core
    assert any(r.startswith("pyseccomp==") for r in reqs)  # the extra
    assert any(r.startswith("kubernetes==") for r in reqs)  # nasloop[cluster], expanded
    assert not any(r.startswith("nasloop") for r in reqs)


def test_only_and_add_give_the_gpu_stage_its_torch_pair() -> None:
    torch_pin = next(r for r in requirements("evaluator") if re.match(r"torch\b", r))
    assert requirements("--only", "torch", "--add", "torchvision==0.28.0", "evaluator") == [
        torch_pin,
        "torchvision==0.28.0",
    ]


def test_only_fails_for_a_distribution_the_extras_do_not_name() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / "pyproject.toml"), "--only", "nope", "evaluator"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "nope" in proc.stderr


@pytest.mark.parametrize("extra", ["evaluator", "trainer", "generator"])
def test_the_gpu_torchvision_pin_is_built_for_the_extras_torch(extra: str) -> None:
    """torchvision 0.N pairs with torch 2.(N-15): the Dockerfile's default must follow the pin."""
    torch_pin = next(r for r in requirements(extra) if re.match(r"torch\b", r))
    m = re.fullmatch(r"torch==2\.(\d+)\.\d+", torch_pin)
    assert m, torch_pin
    defaults = re.findall(r"ARG TORCHVISION=torchvision==0\.(\d+)\.\d+", DOCKERFILE.read_text())
    assert defaults, "the Dockerfile has no TORCHVISION default"
    for minor in defaults:  # the services' GPU stage and the evaluation pod's
        assert int(minor) == int(m.group(1)) + 15, (torch_pin, minor)


def test_the_pod_environment_holds_only_what_the_strict_sandbox_allows() -> None:
    """--view: the evaluation pod's stage installs the extras' pins of view.ALLOWED alone (no
    scikit-learn, no gRPC, S3 or Kubernetes client), so the pod image sees what the local strict
    sandbox sees."""
    from services.evaluator import view

    reqs = requirements("--view", str(ROOT / "services/evaluator/view.py"), "evaluator")
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs}  # type: ignore[union-attr]
    assert names == {"torch", "numpy", "protobuf", "pydantic", "pyyaml", "pyseccomp"}
    assert names <= {n.lower() for n in view.ALLOWED}
    pins = set(requirements("evaluator"))
    assert set(reqs) <= pins  # the evaluator's own pins
