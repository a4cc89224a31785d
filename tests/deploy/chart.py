"""Render the Helm chart with the pinned Helm binary and look at what it produced."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "nasloop"
RELEASE = "nl"
NAMESPACE = "nasloop"
# The values files the chart ships (values.yaml alone is the default).
VALUES_FILES = ["values-gpu.yaml", "values-cpu.yaml", "values-kind.yaml", "values-external-s3.yaml"]


def helm() -> str:
    found = os.environ.get("HELM") or shutil.which("helm", path=str(ROOT / ".venv" / "bin"))
    if not found:
        raise RuntimeError("helm is not installed: `make chart-check` installs the pinned binary")
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


def template(values: list[str] | None, sets: list[str] | None) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for v in values or []:
        args += ["-f", str(CHART / v)]
    for s in sets or []:
        args += ["--set", s]
    return run_helm(*args)


def render(values: list[str] | None = None, sets: list[str] | None = None) -> list[dict[str, Any]]:
    out = template(values, sets)
    if out.returncode:
        raise AssertionError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def refused(sets: list[str], values: list[str] | None = None) -> str:
    """helm template's error for values it must refuse (fails the test when it renders)."""
    out = template(values, sets)
    assert out.returncode != 0, f"helm rendered values it should refuse: {sets}"
    return out.stderr


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    return found


def pod_templates(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner, pod spec) for every workload the chart renders."""
    for o in objs:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield o, o["spec"]["template"]["spec"]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]
