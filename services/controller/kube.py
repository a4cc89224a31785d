"""Cluster mode: each cycle runs as a Kubernetes Job (``nasloop cycle --run R --cycle N``), and
so does the run's baseline after its last cycle (``nasloop cycle --run R --baseline``: "cycle"
``layout.BASELINE`` here, its Job named ``nasloop-cycle-<run>-base``).

The Job's name is a function of the run and the cycle only (:func:`cycle_job_name`), so a
controller that restarts finds the Job it started and re-attaches to it instead of creating a
second one (:meth:`CycleJobs.ensure`).

Failure policy: ``backoffLimit`` is 0, so one failed pod fails the Job; whether and when a cycle
is retried is the controller's decision (a resumed cycle continues from its durable state in the
store), never the Job controller's. To retry, the controller deletes the failed Job
(:meth:`CycleJobs.delete`) and ensures it again.

The pod is hardened like the evaluator's sandbox Jobs: non-root with a fixed uid, no privilege
escalation, every capability dropped, read-only root filesystem (a size-limited ``/tmp``),
RuntimeDefault seccomp, requests equal to limits, a wall-clock deadline, no service-account
token and no Secret: the cycle talks only to the four services and to the controller, through
which it reads and writes its run's records (``controller://``, the ``CycleStore`` service in
cycle_store.py). The controller knows the caller by its pod's address
(:meth:`CycleJobs.cycle_of_pod_ip`).

Where the pod runs and how it pulls its image (pull secrets, node selector, tolerations,
affinity, priority class, and more labels such as the Helm release's instance label, which the
chart's NetworkPolicies match) come from ``controller.kubernetes``
(:func:`nasloop.kubeapi.place_pod`).

RBAC: the controller itself needs only Jobs and Pods in its namespace (:func:`controller_role`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from nasloop import layout
from nasloop.config import Config
from nasloop.kubeapi import job_labels, locked_container_security, locked_pod_spec, place_pod
from nasloop.layout import BASELINE, check_cycle, check_run_name, cycle_label

log = logging.getLogger(__name__)

CONTAINER = "cycle"
CYCLE_UID = 10001  # fixed non-root uid; owns nothing in the image
TMP_SIZE = "1Gi"
CONFIG_DIR = "/etc/nasloop"
CONFIG_FILE = "config.yaml"
IDENTITY_DIR = "/var/run/nasloop/identity"
TERMINATION_GRACE_S = 30
PROPAGATION = "Background"  # the Job goes at once; the garbage collector removes its pods

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUN = "nasloop.io/run"
LABEL_CYCLE = "nasloop.io/cycle"
ANNOTATION_RUN = "nasloop.io/run"
APP = "nasloop"
COMPONENT = "cycle"

# How long wait() keeps retrying an API server that answers with transient errors (5xx, 429,
# connection errors) before it gives up with CycleJobError.
API_OUTAGE_S = 300.0
# How long ensure() waits for a Job that is being deleted to disappear before creating it anew.
DELETION_WAIT_S = 120.0

_MAX_NAME = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Waiting reasons of a container that never resolve by waiting (a bad image name, or the kubelet
# refusing the container's settings: CreateContainerConfigError). Image pull back-off is not
# among them: a registry can recover.
_FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})

State = Literal["succeeded", "failed", "deleted", "stopped"]


class CycleJobError(RuntimeError):
    """The Kubernetes API refused or failed a request about a cycle Job (not 404/409)."""


@dataclass(frozen=True)
class CycleOutcome:
    """How watching a cycle Job ended: ``succeeded``, ``failed`` (``message`` says why: the
    Job's reason, e.g. DeadlineExceeded or BackoffLimitExceeded, and the pod's termination
    reason such as OOMKilled when known), ``deleted`` (the Job vanished while watched) or
    ``stopped`` (the caller's stop event was set; the Job keeps running)."""

    state: State
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


# -- names and manifests ---------------------------------------------------------------------


def cycle_job_name(run: str, cycle: int) -> str:
    """``layout.cycle_job_name``, checked as a DNS-1123 label of at most 63 chars."""
    name = layout.cycle_job_name(run, cycle)
    if len(name) > _MAX_NAME or not _DNS_LABEL.match(name):  # cannot happen for valid inputs
        raise ValueError(f"cycle job name {name!r} is not a DNS-1123 label")
    return name


def cycle_labels(run: str, cycle: int) -> dict[str, str]:
    return {
        LABEL_NAME: APP,
        LABEL_COMPONENT: COMPONENT,
        LABEL_RUN: check_run_name(run),  # a run name is a valid label value
        LABEL_CYCLE: cycle_label(cycle),
    }


def cycle_command(run: str, cycle: int) -> list[str]:
    which = ["--baseline"] if cycle == BASELINE else ["--cycle", str(check_cycle(cycle))]
    return ["python", "-m", "services.cli", "cycle", "--run", run, *which]


def _env(cfg: Config) -> list[dict[str, Any]]:
    ctl, kube = cfg.controller, cfg.controller.kubernetes
    plain: dict[str, str | None] = {
        "NASLOOP_CONTROLLER__GENERATOR": ctl.generator,
        "NASLOOP_CONTROLLER__EVALUATOR": ctl.evaluator,
        "NASLOOP_CONTROLLER__NOVELTY": ctl.novelty,
        "NASLOOP_CONTROLLER__TRAINER": ctl.trainer,
        # The store through the controller: the pod holds no keys.
        "NASLOOP_STORE__URL": f"controller://{kube.controller_address}",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the root filesystem is read-only
    }
    if kube.config_map:
        plain["NASLOOP_CONFIG"] = f"{CONFIG_DIR}/{CONFIG_FILE}"
    if cfg.tls.enabled:
        # Mutual TLS: the pod makes its own key at start and the controller signs it
        # (nasloop.rpc.tls.enrol); it gets only the services' CA, which is public.
        plain.update(
            {
                "NASLOOP_TLS__ENABLED": "true",
                "NASLOOP_TLS__DOMAIN": cfg.tls.domain,
                "NASLOOP_TLS__CA_PEM": _read_ca(cfg),
                "NASLOOP_TLS__CERT_FILE": f"{IDENTITY_DIR}/tls.crt",
                "NASLOOP_TLS__KEY_FILE": f"{IDENTITY_DIR}/tls.key",
            }
        )
    return [{"name": k, "value": v} for k, v in plain.items() if v]


def _read_ca(cfg: Config) -> str:
    if cfg.tls.ca_pem:
        return cfg.tls.ca_pem
    try:
        return Path(cfg.tls.ca_file).read_text()
    except OSError as e:
        raise ValueError(f"tls.ca_file {cfg.tls.ca_file}: {e.strerror}") from None


def cycle_job_manifest(run: str, cycle: int, cfg: Config) -> dict[str, Any]:
    """The hardened Job that runs one cycle (a plain dict, as ``kubectl apply`` takes it).

    Raises ``ValueError`` for a store the services cannot share (``file://``: cluster mode
    needs the S3 store every part reaches; the cycle reaches it through the controller) and
    :class:`nasloop.layout.InvalidName` for a bad run or cycle.
    """
    kube = cfg.controller.kubernetes
    name = cycle_job_name(run, cycle)
    if not cfg.store.url.startswith("s3://"):
        raise ValueError(
            f"cluster mode needs an s3:// object store shared with the services; "
            f"store.url is {cfg.store.url!r}"
        )
    resources = {"cpu": kube.cpu, "memory": kube.memory}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}]
    if cfg.tls.enabled:  # the pod's own key, in memory, never in a Secret
        mounts.append({"name": "identity", "mountPath": IDENTITY_DIR})
        volumes.append({"name": "identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    if kube.config_map:
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "config",
                "configMap": {
                    "name": kube.config_map,
                    "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
                },
            }
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": kube.image,
        "imagePullPolicy": kube.image_pull_policy,
        "command": cycle_command(run, cycle),
        "env": _env(cfg),
        # Requests equal to limits: Guaranteed QoS, never the first victim of memory pressure.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": locked_container_security(CYCLE_UID),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec = locked_pod_spec(CYCLE_UID, container, volumes, TERMINATION_GRACE_S)
    pod_spec["serviceAccountName"] = kube.service_account  # its token is not mounted
    place_pod(pod_spec, kube)
    labels = job_labels(kube, cycle_labels(run, cycle))
    annotations = {ANNOTATION_RUN: run}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": kube.namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": kube.active_deadline_s,
            "ttlSecondsAfterFinished": kube.ttl_after_finished_s,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def controller_role(namespace: str, name: str = "nasloop-controller") -> dict[str, Any]:
    """The least the controller's ServiceAccount needs for cycle Jobs: Jobs and Pods in its own
    namespace (a Role, not a ClusterRole)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_NAME: APP}},
        "rules": [
            {
                "apiGroups": ["batch"],
                "resources": ["jobs"],
                "verbs": ["create", "get", "list", "watch", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ],
    }


# -- the API ---------------------------------------------------------------------------------


def _unless_missing(what: str, call: Callable[[], Any]) -> Any:
    """``call()`` to the API; ``None`` where its object is not there (404); any other failure a
    :class:`CycleJobError` saying that it cannot ``what``."""
    try:
        return call()
    except ApiException as e:
        if e.status == 404:
            return None
        raise CycleJobError(f"cannot {what}: {_describe(e)}") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise CycleJobError(f"cannot {what}: {_describe(e)}") from e


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        return f"Kubernetes API {exc.status} {exc.reason}: {str(body or '')[:300]}"
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _condition(job: k8s.V1Job, type_: str) -> k8s.V1JobCondition | None:
    for c in (job.status and job.status.conditions) or []:
        if c.type == type_ and c.status == "True":
            return c
    return None


def _container_states(pod: k8s.V1Pod) -> list[tuple[str, k8s.V1ContainerState]]:
    statuses = (pod.status and pod.status.container_statuses) or []
    return [(s.name, s.state) for s in statuses if s.state is not None]


class CycleJobs:
    """Creates, watches and deletes cycle Jobs in ``config.controller.kubernetes.namespace``.

    Thread-safe for distinct cycles; every method is idempotent, so a restarted controller can
    call them again for the cycle it was running."""

    def __init__(self, api: k8s.ApiClient, config: Config) -> None:
        self.api = api
        self.config = config
        self.cfg = config.controller.kubernetes
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.api_outage_s = API_OUTAGE_S
        self.deletion_wait_s = DELETION_WAIT_S
        # The uid of each cycle's Job as this controller created or re-attached to it: a pod
        # speaks for a cycle only if that Job owns it (labels alone can be copied).
        self._uids: dict[tuple[str, int], str] = {}
        self._uids_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------
    def ensure(self, run: str, cycle: int) -> str:
        """Make sure the cycle's Job exists; return its name.

        An existing Job of that name (found first, or reported by a 409 on create) is
        re-attached to, whatever its state: a finished one is the outcome of an earlier attempt,
        which :meth:`wait` reports. One that is being deleted is waited out, then created anew.
        """
        name = cycle_job_name(run, cycle)
        manifest = cycle_job_manifest(run, cycle, self.config)
        job = self._read(name)
        if job is not None and job.metadata and job.metadata.deletion_timestamp:
            self._wait_gone(name)
            job = None
        if job is not None:
            self._check_ours(job, run, cycle)
            self._remember(run, cycle, job)
            log.info("re-attached to cycle job %s", name)
            return name
        try:
            self._remember(
                run, cycle, self.batch.create_namespaced_job(self.cfg.namespace, manifest)
            )
        except ApiException as e:
            if e.status != 409:
                raise CycleJobError(f"cannot create cycle job {name}: {_describe(e)}") from e
            job = self._read(name)  # created meanwhile (by another controller replica)
            if job is not None:
                self._check_ours(job, run, cycle)
                self._remember(run, cycle, job)
            log.info("cycle job %s exists already; re-attached", name)
            return name
        except (urllib3.exceptions.HTTPError, OSError) as e:
            # The request may have reached the server: a later ensure() finds that Job.
            raise CycleJobError(f"cannot create cycle job {name}: {_describe(e)}") from e
        log.info("created cycle job %s", name)
        return name

    def wait(self, run: str, cycle: int, stop: threading.Event | None = None) -> CycleOutcome:
        """Poll the cycle's Job until it succeeds, fails or disappears, or ``stop`` is set.

        Transient API errors are retried for up to ``api_outage_s`` in a row; any other API
        error raises :class:`CycleJobError`."""
        name = cycle_job_name(run, cycle)
        stop = stop if stop is not None else threading.Event()
        failing_since: float | None = None
        pause = 0.0  # the first look is immediate
        while True:
            if stop.wait(pause):
                return CycleOutcome("stopped", f"stopped watching cycle job {name}")
            pause = self.cfg.poll_interval_s
            try:
                outcome = self._look(name)
            except ApiException as e:
                if e.status == 404:
                    return CycleOutcome("deleted", f"cycle job {name} was deleted")
                if not _transient(e):
                    raise CycleJobError(f"cannot read cycle job {name}: {_describe(e)}") from e
                failing_since = self._transient_error(name, e, failing_since)
                continue
            except (urllib3.exceptions.HTTPError, OSError) as e:
                failing_since = self._transient_error(name, e, failing_since)
                continue
            failing_since = None
            if outcome is not None:
                log.info("cycle job %s: %s %s", name, outcome.state, outcome.message)
                return outcome

    def cycle_of_pod_ip(self, ip: str) -> tuple[str, int] | None:
        """The run and cycle (``BASELINE`` for the baseline) whose Job has a Running pod at
        address ``ip``, else ``None``: who is calling the controller's CycleStore (pods of
        finished or deleted Jobs are nobody).

        The pod must be owned (its controller reference) by the very Job this controller
        created or re-attached to for that cycle, by uid, and must not share the node's network
        (a host-network pod's address is the node's, shared by everything on it). A pod that
        only copies a cycle Job's labels, or a Job re-created under the same name by someone
        else, is nobody."""
        selector = f"{LABEL_NAME}={APP},{LABEL_COMPONENT}={COMPONENT}"
        try:
            pods = self.core.list_namespaced_pod(self.cfg.namespace, label_selector=selector)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise CycleJobError(f"cannot list the cycle pods: {_describe(e)}") from e
        for pod in pods.items:
            status, meta = pod.status, pod.metadata
            if status is None or meta is None or status.phase != "Running":
                continue
            if meta.deletion_timestamp:
                continue
            if ip not in {status.pod_ip, *(p.ip for p in status.pod_i_ps or [])}:
                continue
            labels = meta.labels or {}
            try:
                run, label = labels[LABEL_RUN], labels[LABEL_CYCLE]
                cycle = BASELINE if label == "base" else check_cycle(int(label))
                check_run_name(run)
            except (KeyError, ValueError):
                return None  # not labelled as the controller labels its cycle Jobs
            if not self._owned_by_our_job(pod, run, cycle):
                log.warning(
                    "pod %s at %s claims cycle %s of %s: not our Job's", meta.name, ip, label, run
                )
                return None
            return run, cycle
        return None

    def _remember(self, run: str, cycle: int, job: Any) -> None:
        uid = job.metadata.uid if job is not None and job.metadata is not None else None
        if uid:
            with self._uids_lock:
                self._uids[(run, cycle)] = uid

    def _owned_by_our_job(self, pod: k8s.V1Pod, run: str, cycle: int) -> bool:
        if pod.spec is None or pod.spec.host_network:
            return False
        with self._uids_lock:
            uid = self._uids.get((run, cycle))
        if uid is None:
            uid = self._adopt(run, cycle)
        owners = [r for r in (pod.metadata.owner_references or []) if r.controller]
        return (
            uid is not None
            and len(owners) == 1
            and owners[0].kind == "Job"
            and owners[0].name == cycle_job_name(run, cycle)
            and owners[0].uid == uid
        )

    def _adopt(self, run: str, cycle: int) -> str | None:
        """The uid of the cycle's Job, re-attached to as :meth:`ensure` would (same checks),
        when this controller has recorded none: restarted, it may hear from a running cycle pod
        before it resumes the run. ``None`` if there is no such Job or it is not ours."""
        job = self._read(cycle_job_name(run, cycle))
        if job is None or job.metadata is None or job.metadata.deletion_timestamp:
            return None
        try:
            self._check_ours(job, run, cycle)
        except CycleJobError as e:
            log.warning("%s", e)
            return None
        self._remember(run, cycle, job)
        return job.metadata.uid

    def delete(self, run: str, cycle: int) -> bool:
        """Delete the cycle's Job and (in the background) its pods; ``False`` if there was none."""
        name = cycle_job_name(run, cycle)
        status = _unless_missing(
            f"delete cycle job {name}",
            lambda: self.batch.delete_namespaced_job(
                name, self.cfg.namespace, propagation_policy=PROPAGATION
            ),
        )
        if status is None:
            return False
        log.info("deleted cycle job %s", name)
        return True

    # -- steps -------------------------------------------------------------------------------
    def _read(self, name: str) -> k8s.V1Job | None:
        return _unless_missing(
            f"read cycle job {name}",
            lambda: self.batch.read_namespaced_job(name, self.cfg.namespace),
        )

    def _wait_gone(self, name: str) -> None:
        give_up = time.monotonic() + self.deletion_wait_s
        while self._read(name) is not None:
            if time.monotonic() > give_up:
                raise CycleJobError(
                    f"cycle job {name} is still being deleted after {self.deletion_wait_s:.0f} s"
                )
            time.sleep(self.cfg.poll_interval_s)

    def _check_ours(self, job: k8s.V1Job, run: str, cycle: int) -> None:
        """Refuse a Job of this name that is not this controller's kind for this cycle: its
        labels, the extra ones included (the release's instance label: another release in the
        namespace with a run of the same name has a Job of the same name), must be ours, and
        its pod must run the cycle's command as the cycle account (which the admission policy
        lets only the controller's token use: a Job made with the evaluator's token runs as the
        sandbox account)."""
        labels = (job.metadata and job.metadata.labels) or {}
        expected = job_labels(self.cfg, cycle_labels(run, cycle))
        pod = job.spec.template.spec if job.spec and job.spec.template else None
        if (
            any(labels.get(k) != v for k, v in expected.items())
            or pod is None
            or pod.service_account_name != self.cfg.service_account
            or [c.command for c in pod.containers or []] != [cycle_command(run, cycle)]
        ):
            raise CycleJobError(
                f"a job named {job.metadata.name} exists but is not this run's cycle job "
                f"(labels {labels}, account {pod and pod.service_account_name!r}); refusing to "
                "attach to it"
            )

    def _transient_error(self, name: str, exc: BaseException, since: float | None) -> float:
        now = time.monotonic()
        since = now if since is None else since
        if now - since > self.api_outage_s:
            raise CycleJobError(
                f"the Kubernetes API failed for {now - since:.0f} s while watching cycle job "
                f"{name}: {_describe(exc)}"
            ) from exc
        log.warning("watching cycle job %s: %s (will retry)", name, _describe(exc))
        return since

    def _look(self, name: str) -> CycleOutcome | None:
        """The outcome if the Job has finished (or its pod can never start), else ``None``."""
        job = self.batch.read_namespaced_job(name, self.cfg.namespace)
        status = job.status
        if _condition(job, "Complete") is not None or (status and (status.succeeded or 0) > 0):
            return CycleOutcome("succeeded", f"cycle job {name} completed")
        failed = _condition(job, "Failed")
        pods = self._pods(name)
        if failed is not None:
            why = ": ".join(x for x in (failed.reason, failed.message) if x) or "no reason given"
            detail = self._termination(pods)
            return CycleOutcome("failed", f"{why}; {detail}" if detail else why)
        for pod in pods:
            for container, state in _container_states(pod):
                w = state.waiting
                if w is not None and w.reason in _FATAL_WAITING:
                    return CycleOutcome(
                        "failed",
                        f"the pod {pod.metadata.name} cannot start: container {container} "
                        f"{w.reason}: {w.message or ''}".rstrip(": "),
                    )
        return None

    def _pods(self, name: str) -> list[k8s.V1Pod]:
        pods = self.core.list_namespaced_pod(self.cfg.namespace, label_selector=f"job-name={name}")
        return list(pods.items)

    @staticmethod
    def _termination(pods: list[k8s.V1Pod]) -> str:
        """What ended the pod, e.g. 'pod X: container cycle OOMKilled (exit 137)'."""
        parts: list[str] = []
        for pod in pods:
            pod_name = pod.metadata.name if pod.metadata else "?"
            if pod.status and pod.status.reason:
                why = f"pod {pod_name}: {pod.status.reason}"
                parts.append(f"{why} ({pod.status.message})" if pod.status.message else why)
            for container, state in _container_states(pod):
                t = state.terminated
                if t is None:
                    continue
                reason = t.reason or "terminated"
                msg = f"pod {pod_name}: container {container} {reason} (exit {t.exit_code})"
                if t.message:
                    msg += f": {t.message.strip()[-300:]}"
                parts.append(msg)
        return "; ".join(parts)
