"""A FAKE of the Kubernetes API for tests: a small HTTP server on loopback, not a cluster.

These machines have no Kubernetes cluster, so the cluster-mode code is tested against this fake.
It serves just what the evaluator's launcher uses, with the real paths and JSON shapes, so the
official ``kubernetes`` client talks to it unchanged:

* ``batch/v1`` Jobs in a namespace: create (the manifest is checked against the Kubernetes
  1.33 schema, as an API server would), get, list, delete (``propagationPolicy``);
* ``core/v1`` Pods: list with an equality ``labelSelector``; a pod's log.

Nothing runs by itself: no scheduler, no kubelet, no Job controller. Tests play those parts with
the state-changing helpers (``start_pod``, ``succeed``, ``oom_kill``, ``evict``, ...), either
directly or from ``on_create``, a hook called with each Job as it is created.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
from kubernetes import client as k8s

Obj = dict[str, Any]
SCHEMA_VERSION = "1.33"

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/log)?)?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


class FakeKubeAPI:
    """The fake API server (see the module docstring). Use as a context manager."""

    def __init__(self, validate: bool = True) -> None:
        self.validate = validate
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.created: list[Obj] = []  # every Job as posted (the manifest)
        self.deleted: list[tuple[str, str, str | None]] = []  # (namespace, name, propagation)
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.on_create: Callable[[FakeKubeAPI, Obj], None] | None = None
        # Scripted API errors: an HTTP status code popped by each Job create / Job get.
        self.create_errors: list[int] = []
        self.get_errors: list[int] = []
        self.hook_errors: list[Exception] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> FakeKubeAPI:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api_client(self) -> k8s.ApiClient:
        """An official-client ApiClient pointed at this fake."""
        configuration = k8s.Configuration(host=self.url)
        return k8s.ApiClient(configuration)

    # -- the API -------------------------------------------------------------------------------
    def create_job(self, namespace: str, body: Obj) -> tuple[int, Obj]:
        with self.lock:
            if self.create_errors:
                code = self.create_errors.pop(0)
                return code, _status(code, "Scripted", f"scripted error {code} on create")
        if self.validate:
            try:
                kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                return 422, _status(422, "Invalid", f"Job is invalid: {e.message}")
        name = body.get("metadata", {}).get("name", "")
        with self.lock:
            if (namespace, name) in self.jobs:
                return 409, _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            self.created.append(copy.deepcopy(body))
            job = copy.deepcopy(body)
            uid = str(uuid.uuid4())
            meta = job["metadata"]
            meta.update(namespace=namespace, uid=uid, resourceVersion="1", creationTimestamp=_now())
            selector = {"batch.kubernetes.io/controller-uid": uid}
            job["spec"]["selector"] = {"matchLabels": selector}
            tmeta = job["spec"]["template"].setdefault("metadata", {})
            tmeta.setdefault("labels", {}).update(
                {
                    **selector,
                    "controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "job-name": name,
                }
            )
            job["status"] = {}
            self.jobs[(namespace, name)] = job
            hook = self.on_create
        if hook is not None:
            try:
                hook(self, copy.deepcopy(job))
            except Exception as e:  # surfaced by check(): a handler thread would swallow it
                self.hook_errors.append(e)
                return 500, _status(500, "InternalError", f"on_create hook failed: {e!r}")
        return 201, self.job(name, namespace)

    def check(self) -> None:
        """Re-raise the first exception an ``on_create`` hook raised (its test failed there)."""
        if self.hook_errors:
            raise self.hook_errors[0]

    def delete_job(self, namespace: str, name: str, propagation: str | None) -> tuple[int, Obj]:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deleted.append((namespace, name, propagation))
            if propagation != "Orphan":  # the garbage collector's part, done at once
                for key in [k for k, p in self.pods.items() if self._owned(p, job)]:
                    del self.pods[key]
        return 200, _status(200, "", "")

    @staticmethod
    def _owned(pod: Obj, job: Obj) -> bool:
        refs = pod["metadata"].get("ownerReferences", [])
        return any(r.get("uid") == job["metadata"]["uid"] for r in refs)

    # -- state helpers for tests (a stand-in for scheduler, kubelet and Job controller) ---------
    def job(self, name: str, namespace: str = "nasloop") -> Obj:
        with self.lock:
            return copy.deepcopy(self.jobs[(namespace, name)])

    def pods_of(self, name: str, namespace: str = "nasloop") -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(p)
                for (ns, _), p in self.pods.items()
                if ns == namespace and p["metadata"]["labels"].get("job-name") == name
            ]

    def env_of(self, name: str, namespace: str = "nasloop") -> dict[str, str]:
        """The sandbox container's environment in the Job's manifest."""
        container = self.job(name, namespace)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container.get("env", [])}

    def start_pod(
        self,
        name: str,
        namespace: str = "nasloop",
        phase: str = "Running",
        pod_ip: str | None = None,
        host_network: bool = False,
    ) -> str:
        """Create the Job's pod (as the Job controller would) in ``phase``, with address
        ``pod_ip`` if given (as the network plugin would; with ``host_network``, the pod spec
        says so, as a template asking for the node's network would); return its name."""
        with self.lock:
            job = self.jobs[(namespace, name)]
            template = job["spec"]["template"]
            pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
            container = template["spec"]["containers"][0]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "labels": dict(template["metadata"]["labels"]),
                    "creationTimestamp": _now(),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": phase, "conditions": []},
            }
            if host_network:
                pod["spec"]["hostNetwork"] = True
            if pod_ip is not None:
                pod["status"].update(podIP=pod_ip, podIPs=[{"ip": pod_ip}])
            if phase == "Running":
                pod["status"]["containerStatuses"] = [
                    self._container_status(container, {"running": {"startedAt": _now()}}, True)
                ]
            self.pods[(namespace, pod_name)] = pod
            job["status"].update(active=1, startTime=_now())
            return pod_name

    @staticmethod
    def _container_status(container: Obj, state: Obj, ready: bool) -> Obj:
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": ready,
            "state": state,
        }

    def _pod(self, name: str, namespace: str) -> Obj:
        matches = [
            p
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"]["labels"].get("job-name") == name
        ]
        if not matches:
            raise KeyError(f"job {name} has no pod; call start_pod first")
        return matches[-1]

    def _ensure_pod(self, name: str, namespace: str) -> Obj:
        with self.lock:
            if not any(p["metadata"]["labels"].get("job-name") == name for p in self.pods.values()):
                self.start_pod(name, namespace)
            return self._pod(name, namespace)

    def set_pending(
        self,
        name: str,
        namespace: str = "nasloop",
        waiting: str | None = None,
        unschedulable: str | None = None,
    ) -> None:
        """The pod waits: for its image (``waiting`` reason) or for a node (``unschedulable``)."""
        with self.lock:
            pod = self._ensure_pod(name, namespace)
            container = pod["spec"]["containers"][0]
            pod["status"] = {"phase": "Pending", "conditions": []}
            if unschedulable is not None:
                pod["status"]["conditions"].append(
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": unschedulable,
                    }
                )
            if waiting is not None:
                state = {"waiting": {"reason": waiting, "message": f"{waiting} for image"}}
                pod["status"]["containerStatuses"] = [
                    self._container_status(container, state, False)
                ]

    def terminate(
        self,
        name: str,
        exit_code: int,
        reason: str | None = None,
        namespace: str = "nasloop",
        pod_reason: str | None = None,
        pod_message: str | None = None,
        conditions: list[Obj] | None = None,
    ) -> None:
        """The container ends with ``exit_code``; the pod becomes Succeeded or Failed."""
        with self.lock:
            pod = self._ensure_pod(name, namespace)
            container = pod["spec"]["containers"][0]
            terminated = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": _now(),
                "finishedAt": _now(),
            }
            status = pod["status"]
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            status["containerStatuses"] = [
                self._container_status(container, {"terminated": terminated}, False)
            ]
            if pod_reason:
                status["reason"] = pod_reason
            if pod_message:
                status["message"] = pod_message
            status.setdefault("conditions", []).extend(conditions or [])

    def finish_job(
        self, name: str, ok: bool, reason: str = "", message: str = "", namespace: str = "nasloop"
    ) -> None:
        """The Job controller's verdict: ``Complete`` or ``Failed`` (with ``reason``)."""
        with self.lock:
            job = self.jobs[(namespace, name)]
            now = _now()

            def cond(type_: str) -> Obj:
                return {
                    "type": type_,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                }

            status = job["status"]
            status.pop("active", None)
            if ok:
                status.update(
                    succeeded=1,
                    completionTime=now,
                    conditions=[cond("SuccessCriteriaMet"), cond("Complete")],
                )
            else:
                status.update(failed=1, conditions=[cond("FailureTarget"), cond("Failed")])

    # -- scenarios ---------------------------------------------------------------------------
    def succeed(self, name: str, log: str = "", namespace: str = "nasloop") -> None:
        self.terminate(name, 0, namespace=namespace)
        self.set_log(name, log, namespace)
        self.finish_job(
            name, True, "CompletionsReached", "Reached expected number of succeeded pods"
        )

    def fail(self, name: str, exit_code: int, namespace: str = "nasloop", log: str = "") -> None:
        self.terminate(name, exit_code, namespace=namespace)
        self.set_log(name, log, namespace)
        self.finish_job(
            name,
            False,
            "PodFailurePolicy",
            f"Container sandbox failed with exit code {exit_code} matching FailJob rule at index 1",
        )

    def oom_kill(self, name: str, namespace: str = "nasloop") -> None:
        self.terminate(name, 137, reason="OOMKilled", namespace=namespace)
        self.finish_job(name, False, "PodFailurePolicy", "Container sandbox was OOMKilled")

    def deadline_exceeded(self, name: str, namespace: str = "nasloop") -> None:
        """The Job ran past activeDeadlineSeconds: its pod is killed and the Job fails."""
        with self.lock:
            self.terminate(name, 137, namespace=namespace)
            self.finish_job(
                name, False, "DeadlineExceeded", "Job was active longer than specified deadline"
            )

    def evict(self, name: str, namespace: str = "nasloop", message: str = "") -> None:
        disruption = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "TerminationByKubelet",
            "message": message or "The node was low on resource: memory.",
        }
        self.terminate(
            name,
            137,
            namespace=namespace,
            pod_reason="Evicted",
            pod_message=message or "The node was low on resource: memory.",
            conditions=[disruption],
        )
        self.finish_job(name, False, "BackoffLimitExceeded", "Job has reached the backoff limit")

    def delete_pods(self, name: str, namespace: str = "nasloop") -> None:
        """The pods vanish (preemption and the eviction API delete them)."""
        with self.lock:
            for key in [
                k
                for k, p in self.pods.items()
                if k[0] == namespace and p["metadata"]["labels"].get("job-name") == name
            ]:
                del self.pods[key]

    def set_log(self, name: str, text: str, namespace: str = "nasloop") -> None:
        with self.lock:
            pod = self._pod(name, namespace)
            self.logs[(namespace, pod["metadata"]["name"])] = text


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: Obj | str) -> None:
        if isinstance(body, str):
            raw, ctype = body.encode(), "text/plain"
        else:
            raw, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Obj:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        api = self.api
        with api.lock:
            api.requests.append((method, parts.path))
        if m := _JOBS.match(parts.path):
            ns, name = m.groups()
            if method == "POST" and name is None:
                return self._send(*api.create_job(ns, self._body()))
            if method == "GET" and name is None:
                with api.lock:
                    items = [
                        copy.deepcopy(j)
                        for (n, _), j in api.jobs.items()
                        if n == ns
                        and _matches(
                            j["metadata"].get("labels", {}), query.get("labelSelector", "")
                        )
                    ]
                return self._send(200, _list("JobList", "batch/v1", items))
            if method == "GET":
                with api.lock:
                    if api.get_errors:
                        code = api.get_errors.pop(0)
                        return self._send(code, _status(code, "Scripted", "scripted error"))
                    job = api.jobs.get((ns, name))
                    job = copy.deepcopy(job) if job else None
                if job is None:
                    return self._send(
                        404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
                    )
                return self._send(200, job)
            if method == "DELETE":
                body = self._body()
                policy = query.get("propagationPolicy") or body.get("propagationPolicy")
                return self._send(*api.delete_job(ns, name, policy))
        if (m := _PODS.match(parts.path)) and method == "GET":
            ns, name, log = m.groups()
            if name is None:
                selector = query.get("labelSelector", "")
                with api.lock:
                    items = [
                        copy.deepcopy(p)
                        for (n, _), p in api.pods.items()
                        if n == ns and _matches(p["metadata"]["labels"], selector)
                    ]
                return self._send(200, _list("PodList", "v1", items))
            with api.lock:
                pod = copy.deepcopy(api.pods.get((ns, name)))
                text = api.logs.get((ns, name), "")
            if pod is None:
                return self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
            if log:
                lines = text.splitlines(keepends=True)
                if "tailLines" in query:
                    lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
                out = "".join(lines)
                if "limitBytes" in query:
                    out = out.encode()[: int(query["limitBytes"])].decode(errors="ignore")
                return self._send(200, out)
            return self._send(200, pod)
        self._send(
            404, _status(404, "NotFound", f"the fake has no route for {method} {parts.path}")
        )

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def _list(kind: str, api_version: str, items: list[Obj]) -> Obj:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }


@contextmanager
def fake_kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        yield api
