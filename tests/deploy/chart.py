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


# -- NetworkPolicy semantics, for pods in the release's namespace -----------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects a pod with ``labels``;
    the empty selector selects every pod."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # outside the cluster's pods
    ns = peer.get("namespaceSelector")
    if ns is not None and not selects(ns, {"kubernetes.io/metadata.name": namespace}):
        return False
    return selects(peer.get("podSelector", {}), labels)


def _rule_admits(rule: dict[str, Any], side: str, labels: dict[str, str], port: int) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get(side)
    return not peers or any(_peer_admits(p, labels, NAMESPACE) for p in peers)


def allowed(
    policies: list[dict[str, Any]], src: dict[str, str], dst: dict[str, str], port: int
) -> bool:
    """Whether NetworkPolicies let a pod labelled ``src`` open a TCP connection to a pod
    labelled ``dst`` on ``port``, both in the release's namespace: the source's egress and the
    destination's ingress must each be unrestricted (no policy of that type selects the pod)
    or admitted by some rule of a policy that selects it."""

    def side_ok(kind: str, pod: dict[str, str], peer: dict[str, str], side: str) -> bool:
        mine = [
            p
            for p in policies
            if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod)
        ]
        if not mine:
            return True
        rules = [r for p in mine for r in p["spec"].get(kind.lower(), [])]
        return any(_rule_admits(r, side, peer, port) for r in rules)

    return side_ok("Egress", src, dst, "to") and side_ok("Ingress", dst, src, "from")
