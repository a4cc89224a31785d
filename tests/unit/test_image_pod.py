"""tests/image_pod.py (the images smoke test's pod check): the buildah options it derives from a
real Job manifest are the pod's conditions. The check itself runs in `make images-smoke`."""

from __future__ import annotations

from pathlib import Path

from image_pod import NOT_BOUND, run_options

from nasloop.config import KubernetesConfig
from services.evaluator.kube import manifests


def pairs(options: list[str], flag: str) -> list[str]:
    return [options[i + 1] for i, o in enumerate(options[:-1]) if o == flag]


def test_buildah_options_follow_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    for d in ("etc", "opt", "usr/bin", "var/lib", "tmp", "proc", "dev", "sys", "run/lock"):
        (root / d).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "file").write_text("")
    job = manifests.job_manifest(
        KubernetesConfig(gpus=0, image="localhost/nasloop/evaluator:x"),
        "eval-c-1234abcd",
        "c",
        task_url="http://s3/task?X-Amz-Signature=1",
        data_url="http://s3/data",
        result_url="http://s3/report",
        time_limit_s=60,
        extra_env={"NASLOOP_EVALUATOR__MEMORY_BYTES": "123"},
    )
    (container,) = job["spec"]["template"]["spec"]["containers"]
    opts = run_options(container, str(root))

    uid = manifests.SANDBOX_UID
    assert pairs(opts, "--isolation") == ["chroot"]
    assert pairs(opts, "--user") == [f"{uid}:{uid}"]
    assert pairs(opts, "--cap-drop") == ["ALL"]
    assert pairs(opts, "--mount") == ["type=tmpfs,destination=/tmp"]
    assert sorted(pairs(opts, "--volume")) == sorted(
        [f"{root / d}:/{d}:ro" for d in ("etc", "opt", "usr", "var")]
        + [f"{root / 'run' / 'lock'}:/run/lock:ro"]
    )
    assert not NOT_BOUND & {v.split(":")[1].strip("/") for v in pairs(opts, "--volume")}
    env = dict(e.split("=", 1) for e in pairs(opts, "--env"))
    assert env == {e["name"]: e["value"] for e in container["env"]}
    assert env[manifests.ENV_TASK_URL] == "http://s3/task?X-Amz-Signature=1"
    assert env["NASLOOP_EVALUATOR__MEMORY_BYTES"] == "123"
    assert env["HOME"] == "/tmp"


def test_no_read_only_binds_without_a_mountpoint() -> None:
    container = {"securityContext": {}, "env": [], "volumeMounts": []}
    assert run_options(container, None) == ["--isolation", "chroot"]
