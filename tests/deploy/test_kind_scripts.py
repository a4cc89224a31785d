"""The kind scripts (deploy/kind/) against stand-ins for docker, kind, kubectl and podman that
record how they were called: no Docker engine or cluster here, so these check the command lines
the scripts build and that each stops early, naming the missing tool."""

from __future__ import annotations

import os
import shutil
import socket
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
  *"get secret"*access_key*) echo YWNjZXNz ;;
  *"get secret"*secret_key*) echo c2VjcmV0 ;;
  *jsonpath*) echo 4 ;;
  *"get nodes"*"-o name"*) echo node/nasloop-worker2 ;;
  *port-forward*)
    # Listens on the forwarded local port, as kubectl does, until the script stops it.
    for a in "$@"; do [[ $a == *:* ]] && port=${a%%:*}; done
    exec /usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)' "$port" ;;
esac""",
    # helm: `status` succeeds once a release was installed ($FAKE_LOG.release), as Helm's does.
    "helm": """case "$1" in
  version) echo "${FAKE_HELM_VERSION:-v3.14.2+g1234567}" ;;
  status) [[ -e $FAKE_LOG.release ]] ;;
  upgrade) touch "$FAKE_LOG.release" ;;
esac""",
    # The interpreter deploy.sh publishes the model with: records the store it was given.
    "python": """keys="$NASLOOP_STORE__ACCESS_KEY $NASLOOP_STORE__SECRET_KEY"
echo "store $NASLOOP_STORE__ENDPOINT $keys" >>"$FAKE_LOG"
cat >/dev/null""",
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
        "PYTHON": str(bin_dir / "python"),
        "STORE_PORT": str(free_port()),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KIND / script), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
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
    assert len(pushes) == 6  # the five services and the evaluation pod's image
    for c in pushes:
        _, _, ref, dest = c.split(" ")
        assert ref.startswith("nasloop/") and dest.endswith(f"/image.tar:{ref}"), c
        assert dest.startswith("docker-archive:")
    assert "podman push nasloop/evaluator:t-cpu" in "\n".join(pushes)
    assert sum(c.startswith("kind load image-archive --name nasloop ") for c in calls(env)) == 6
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
    assert "nasloop/evaluator-pod:t-gpu" in refs


@pytest.mark.parametrize(("variant", "runtime"), [("cpu", False), ("gpu", True)])
def test_deploy_names_nvkinds_runtime_class_for_the_gpu_images(
    fakes, tmp_path, variant, runtime
) -> None:  # type: ignore[no-untyped-def]
    """Real GPUs (nvkind) run under the RuntimeClass "nvidia", not containerd's default runtime:
    with the GPU images every GPU pod of the chart names it."""
    env = {**fakes, "IMAGE_VARIANT": variant}
    r = run("deploy.sh", env)
    assert r.returncode == 0, r.stderr
    installs = [c for c in calls(env) if c.startswith("helm upgrade --install")]
    assert len(installs) == 2  # a first install: without the generator, then with it
    for install in installs:
        assert f"--set image.variant={variant}" in install
        assert ("--set gpu.runtimeClassName=nvidia" in install) is runtime


def test_first_deploy_publishes_the_model_before_the_generator_starts(fakes) -> None:  # type: ignore[no-untyped-def]
    """A fresh cluster: the generator (model.source=store) must not start before its model is in
    the store, or it exits and crash-loops until someone publishes it. deploy.sh installs
    everything but the generator, publishes the tiny model through a port-forward to the bundled
    store (its keys from the chart's Secret), then installs the generator, each step waited for."""
    r = run("deploy.sh", fakes, "--set", "run.enabled=true")
    assert r.returncode == 0, r.stderr
    log = calls(fakes)
    first = next(i for i, c in enumerate(log) if c.startswith("helm upgrade --install"))
    published = log.index(f"store 127.0.0.1:{fakes['STORE_PORT']} access secret")
    last = max(i for i, c in enumerate(log) if c.startswith("helm upgrade --install"))
    assert first < published < last
    assert "--set generator.enabled=false" in log[first] and "--wait" in log[first]
    # A run asked for starts with the generator, not before (the later --set wins in Helm).
    assert log[first].index("run.enabled=true") < log[first].index("run.enabled=false")
    assert "--set generator.enabled=false" not in log[last] and "--wait" in log[last]
    assert log[last].endswith("--set run.enabled=true")
    assert "--set model.storeKey=models/tiny-e2e" in log[last]
    forward = next(i for i, c in enumerate(log) if "port-forward" in c)
    rollout = next(i for i, c in enumerate(log) if "rollout status deployment/nasloop-store" in c)
    assert first < rollout < forward < published


def test_redeploy_publishes_if_needed_and_upgrades_once(fakes) -> None:  # type: ignore[no-untyped-def]
    """The release exists: no install without the generator; the model is still made sure of."""
    Path(fakes["FAKE_LOG"] + ".release").touch()
    r = run("deploy.sh", {**fakes, "KIND_MODEL": "models/mine"})
    assert r.returncode == 0, r.stderr
    installs = [c for c in calls(fakes) if c.startswith("helm upgrade --install")]
    assert len(installs) == 1 and "--set model.storeKey=models/mine" in installs[0]
    assert "generator.enabled=false" not in installs[0]
    assert any(c.startswith("store 127.0.0.1:") for c in calls(fakes))


def test_publish_model_0_installs_once_without_publishing(fakes) -> None:  # type: ignore[no-untyped-def]
    r = run("deploy.sh", {**fakes, "PUBLISH_MODEL": "0"})
    assert r.returncode == 0, r.stderr
    assert not any(c.startswith("store ") or "port-forward" in c for c in calls(fakes))
    assert len([c for c in calls(fakes) if c.startswith("helm upgrade --install")]) == 1


def helm_bin(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {KIND / 'common.sh'} && helm_bin"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_a_supported_helm_on_path_is_used_before_the_pinned_one(fakes) -> None:  # type: ignore[no-untyped-def]
    r = helm_bin(fakes)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(Path(fakes["PATH"].split(":")[0]) / "helm")


@pytest.mark.skipif(
    not (ROOT / ".venv/bin/helm").exists(), reason="the pinned Helm is not installed"
)
def test_an_old_helm_on_path_gives_way_to_the_pinned_one(fakes) -> None:  # type: ignore[no-untyped-def]
    r = helm_bin({**fakes, "FAKE_HELM_VERSION": "v3.8.2+g6e3701e"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(ROOT / ".venv/bin/helm")
    assert "older than Helm 3.12" in r.stderr
