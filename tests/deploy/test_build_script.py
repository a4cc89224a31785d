"""deploy/images/build.sh against a stand-in buildah that records how it was called (building
the images themselves is make images-smoke's job): the --platform option, the targets it knows."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "images" / "build.sh"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "buildah"
    fake.write_text('#!/usr/bin/env bash\necho "buildah $*" >>"$FAKE_LOG"\n')
    fake.chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "BUILDER": "buildah",
        "WHEELS": str(wheels),
        "PIP_CA": "",
        "IMAGE_TAG": "t",
    }


def build(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    r = subprocess.run(
        [str(BUILD), *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    log = Path(env["FAKE_LOG"])
    return r, log.read_text().splitlines() if log.exists() else []


def test_platform_is_passed_to_the_builder(env: dict[str, str]) -> None:
    r, calls = build(env, "--platform", "linux/arm64", "novelty", "evaluator-pod-cpu")
    assert r.returncode == 0, r.stderr
    assert len(calls) == 2
    for call in calls:
        assert " --platform linux/arm64 " in call
    assert "--target evaluator-pod-cpu -t nasloop/evaluator-pod:t-cpu" in calls[1]
    if platform.machine() == "x86_64":  # this machine's wheels are not arm64 wheels
        assert env["WHEELS"] not in calls[0]
    # Without the option: this machine's platform, with its wheels.
    r, calls = build(env, "novelty")
    assert r.returncode == 0, r.stderr
    assert "--platform" not in calls[-1]
    assert f"-v {env['WHEELS']}:{env['WHEELS']}:ro" in calls[-1]


def test_platform_from_the_environment_and_the_equals_form(env: dict[str, str]) -> None:
    _, calls = build({**env, "PLATFORM": "linux/arm64"}, "novelty")
    assert " --platform linux/arm64 " in calls[0]
    _, calls = build(env, "--platform=linux/amd64", "controller")
    assert " --platform linux/amd64 " in calls[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform"], "--platform needs a value"),
        (["--platform", "arm64", "novelty"], "expected OS/ARCH"),
        (["--plat", "novelty"], "unknown option --plat"),
    ],
)
def test_bad_arguments_are_refused_before_any_build(
    env: dict[str, str], args: list[str], message: str
) -> None:
    r, calls = build(env, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert calls == []
