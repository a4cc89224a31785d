"""A FAKE Kubernetes API server for Helm, for tests: loopback HTTP, not a cluster.

There is no cluster on these machines, so what the chart reads from one (Helm's ``lookup``, run
by ``helm template --dry-run=server`` and by every install and upgrade) is served by this fake:
discovery of the API groups the chart uses, and GET of the objects a test puts in it (404 for
any other). Nothing can be written to it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (group/version, plural, kind, namespaced) of every kind the chart renders.
KINDS = [
    ("v1", "namespaces", "Namespace", False),
    ("v1", "secrets", "Secret", True),
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "services", "Service", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("apps/v1", "deployments", "Deployment", True),
    ("batch/v1", "jobs", "Job", True),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
]
_PLURAL = {kind: plural for _, plural, kind, _ in KINDS}


def _discovery(kinds: list[tuple[str, str, str, bool]]) -> dict[str, Any]:
    routes: dict[str, Any] = {
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    for gv, plural, kind, namespaced in kinds:
        verbs = ["get", "list", "create", "update", "patch", "delete"]
        resource = {"name": plural, "singularName": kind.lower(), "namespaced": namespaced}
        groups.setdefault(gv, []).append(resource | {"kind": kind, "verbs": verbs})
    for gv, resources in groups.items():
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        routes[path] = {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
    routes["/apis"] = {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": gv.split("/")[0],
                "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
            }
            for gv in groups
            if "/" in gv
        ],
    }
    return routes


def _path(obj: dict[str, Any]) -> str:
    gv, meta = obj["apiVersion"], obj["metadata"]
    base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    ns = f"/namespaces/{meta['namespace']}" if "namespace" in meta else ""
    return f"{base}{ns}/{_PLURAL[obj['kind']]}/{meta['name']}"


@contextmanager
def fake_apiserver(
    objects: list[dict[str, Any]], more_kinds: tuple[tuple[str, str, str, bool], ...] = ()
) -> Iterator[str]:
    """Serve discovery (of ``KINDS`` and ``more_kinds``, e.g. cert-manager's) and ``objects``
    on loopback; yields the server's URL."""
    routes = _discovery([*KINDS, *more_kinds]) | {_path(o): o for o in objects}
    not_found = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path.split("?", 1)[0])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body if body is not None else not_found).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
