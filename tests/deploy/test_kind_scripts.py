"""The kind scripts (deploy/kind/) against stand-ins for docker, kind, kubectl and podman that
record how they were called: no Docker engine or cluster here, so these check the command lines
the scripts build and that each stops early, naming the missing tool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "deploy" / "kind"

# Each stand-in appends its command line to $FAKE_LOG and answers what the scripts ask of it.
FAKES = {
    "docker": "exit 0",
    "kind": """case "$1 $2" in
  "get clusters") echo nasloop ;;
  "get kubeconfig") echo "apiVersion: v1" ;;
esac""",
    "kubectl": """case "$*" in
  *jsonpath*) echo 4 ;;
  *"get nodes"*"-o name"*) echo node/nasloop-worker2 ;;
esac""",
    "podman": "exit 0",
}


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        tool = bin_dir / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >>"$FAKE_LOG"\n{body}\n')
        tool.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
    }


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KIND / script)], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


@pytest.mark.parametrize(
    ("script", "missing"),
    [("up.sh", "docker"), ("load.sh", "kind"), ("deploy.sh", "kind"), ("e2e.sh", "kind"),
     ("down.sh", "kind")],
)  # fmt: skip
def test_each_script_names_the_missing_tool(tmp_path: Path, script: str, missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "git", "dirname", "env", "sed", "head", "grep", "cat", "mktemp", "rm"):
        found = shutil.which(tool)
        assert found, tool
        os.symlink(found, bin_dir / tool)
    r = run(script, {"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert r.returncode == 1
    assert f"error: {missing} is required but not installed" in r.stderr, r.stderr


def test_patch_mode_advertises_gpus_through_the_status_subresource(fakes) -> None:  # type: ignore[no-untyped-def]
    r = run("up.sh", fakes)
    assert r.returncode == 0, r.stderr
    patch = (
        "kubectl --context kind-nasloop patch node/nasloop-worker2 --subresource=status "
        '--type=json -p [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]'
    )
    assert patch in calls(fakes)
    assert "allocatable nvidia.com/gpu: 4" in r.stdout


def test_podman_images_are_archived_under_the_name_the_chart_pulls(fakes) -> None:  # type: ignore[no-untyped-def]
    """podman stores `-t nasloop/x` as localhost/nasloop/x, and `podman save` keeps that name in
    the archive; pushed to a docker-archive with the reference, nodes get docker.io/nasloop/x."""
    env = {**fakes, "BUILDER": "podman", "SKIP_BUILD": "1", "IMAGE_TAG": "t"}
    r = run("load.sh", env)
    assert r.returncode == 0, r.stderr
    pushes = [c for c in calls(env) if c.startswith("podman push")]
    assert len(pushes) == 5
    for c in pushes:
        _, _, ref, dest = c.split(" ")
        assert ref.startswith("nasloop/") and dest.endswith(f"/image.tar:{ref}"), c
        assert dest.startswith("docker-archive:")
    assert "podman push nasloop/evaluator:t-cpu" in "\n".join(pushes)
    assert sum(c.startswith("kind load image-archive --name nasloop ") for c in calls(env)) == 5
    assert not any(c.startswith("podman save") for c in calls(env))


def test_gpu_variant_loads_the_gpu_images(fakes) -> None:  # type: ignore[no-untyped-def]
    env = {
        **fakes,
        "BUILDER": "podman",
        "SKIP_BUILD": "1",
        "IMAGE_TAG": "t",
        "IMAGE_VARIANT": "gpu",
    }
    r = run("load.sh", env)
    assert r.returncode == 0, r.stderr
    refs = {c.split(" ")[2] for c in calls(env) if c.startswith("podman push")}
    assert {"nasloop/evaluator:t-gpu", "nasloop/trainer:t-gpu", "nasloop/generator:t-gpu"} <= refs


@pytest.mark.parametrize(("variant", "runtime"), [("cpu", False), ("gpu", True)])
def test_deploy_names_nvkinds_runtime_class_for_the_gpu_images(
    fakes, tmp_path, variant, runtime
) -> None:  # type: ignore[no-untyped-def]
    """Real GPUs (nvkind) run under the RuntimeClass "nvidia", not containerd's default runtime:
    with the GPU images every GPU pod of the chart names it."""
    helm = tmp_path / "bin" / "helm"
    helm.write_text('#!/usr/bin/env bash\necho "helm $*" >>"$FAKE_LOG"\n')
    helm.chmod(0o755)
    env = {**fakes, "HELM": str(helm), "IMAGE_VARIANT": variant}
    r = run("deploy.sh", env)
    assert r.returncode == 0, r.stderr
    (install,) = [c for c in calls(env) if c.startswith("helm upgrade --install")]
    assert f"--set image.variant={variant}" in install
    assert ("--set gpu.runtimeClassName=nvidia" in install) is runtime
