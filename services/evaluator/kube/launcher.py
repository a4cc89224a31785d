"""Cluster mode: run one evaluation as a hardened Kubernetes Job and turn its outcome into a Report.

Lifecycle of one evaluation (``evaluations/<job>/`` in the object store):

1. the dataset's sandbox file is put in the store at ``Prepared.key`` unless it is there already
   (once per key and process; it is content-addressed and shared by all evaluations, so it is
   never deleted here); the task JSON goes to ``evaluations/<job>/task.json``; presigned URLs
   are made for it, for the dataset and for the report upload at
   ``evaluations/<job>/report.bin``;
2. the Job is created (manifests.job_manifest) and polled, with its pods, until it finishes;
3. the outcome is read: the uploaded report if there is one, else what Kubernetes says
   (OOM-killed, deadline exceeded, evicted, never started, failed without a report);
4. in every case the Job and the evaluation's objects (not the dataset) are deleted.

Failures that happen before the sandbox reported carry ``last_stage = STAGE_POLICY``: the
candidate passed the static checks (that is why it was sent) and nothing later is known.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from nasloop import layout
from nasloop.config import Config, EvaluatorConfig, KubernetesConfig, StoreConfig
from nasloop.kubeapi import kube_api_client
from nasloop.store import ObjectNotFound, ObjectStore, S3Store, StoreError, join_key
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2
from services.evaluator import pod as pod_entry
from services.evaluator import report as wire
from services.evaluator.datasets import Prepared
from services.evaluator.kube import manifests
from services.evaluator.report import Report
from services.evaluator.task import Task

log = logging.getLogger(__name__)

EVALUATIONS_PREFIX = layout.EVALUATIONS
PROPAGATION = "Background"  # the Job goes at once; the garbage collector removes its pod
LOG_TAIL_LINES = 200
LOG_LIMIT_BYTES = 256 * 1024
URL_MARGIN_S = 300
MAX_URL_EXPIRY_S = 7 * 24 * 3600  # the longest SigV4 presigned URLs may live

# Pod-level reasons (pod.status.reason) set when the platform, not the candidate, ended a pod.
_PLATFORM_REASONS = frozenset(
    {"Evicted", "Preempting", "NodeShutdown", "Terminated", "Shutdown", "NodeLost",
     "UnexpectedAdmissionError", "NodeAffinity"}
)  # fmt: skip
# Waiting reasons that never resolve by waiting.
_FATAL_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
# Exit codes pod.py uses when its own plumbing failed (and it could not even upload a report
# saying so). The candidate cannot cause them: it runs in a child that is gone by then.
_PLUMBING_EXITS = {
    pod_entry.EXIT_USAGE: "the pod's environment lacked its URLs",
    pod_entry.EXIT_DOWNLOAD: "the pod could not fetch its task or dataset",
    pod_entry.EXIT_RUN: "the pod could not run the sandbox",
    pod_entry.EXIT_UPLOAD: "the pod could not upload its report",
}
# Sandbox settings forwarded to pods (plain numbers, nothing secret).
_FORWARDED_SETTINGS = (
    "memory_bytes",
    "file_bytes",
    "open_files",
    "tmp_bytes",
    "output_tail_bytes",
    "probe_time_limit_s",
)


class ExecutorError(RuntimeError):
    """The executor cannot be used as configured."""


def pod_presigner(store_cfg: StoreConfig, endpoint: str) -> S3Store:
    """An S3 store handle that signs URLs for ``endpoint``, the store as pods reach it.

    A SigV4 signature covers the host, so a URL signed for the evaluator's endpoint cannot be
    rewritten for another one. This handle is only used to sign: it never creates the bucket
    and has a fixed region, so signing needs no request to an endpoint we may not reach.
    """
    if not store_cfg.url.startswith("s3://"):
        raise ExecutorError("cluster mode needs an s3:// store (pods fetch through presigned URLs)")
    bucket, _, prefix = store_cfg.url[len("s3://") :].strip("/").partition("/")
    return S3Store(
        endpoint,
        bucket,
        prefix,
        access_key=store_cfg.access_key.get_secret_value() if store_cfg.access_key else None,
        secret_key=store_cfg.secret_key.get_secret_value() if store_cfg.secret_key else None,
        region=store_cfg.region or "us-east-1",
        secure=store_cfg.secure,
        create_bucket=False,
    )


def sandbox_env(evaluator: EvaluatorConfig) -> dict[str, str]:
    """The evaluator's sandbox limits as ``NASLOOP_EVALUATOR__*`` variables for pod.py."""
    return {
        f"{pod_entry.SETTINGS_PREFIX}{key.upper()}": str(getattr(evaluator, key))
        for key in _FORWARDED_SETTINGS
    }


@dataclass
class _Watch:
    """What polling has seen of one Job (pods are remembered after they vanish)."""

    job: k8s.V1Job | None = None
    pods: dict[str, k8s.V1Pod] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # pods seen once, then deleted
    started: bool = False


def _failure(status: int, message: str) -> Report:
    return Report(last_stage=common.STAGE_POLICY).fail(status, message)


def _finished(job: k8s.V1Job | None) -> str | None:
    """``"Complete"`` or ``"Failed"`` once the Job is final, else None."""
    for c in (job.status.conditions if job and job.status else None) or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return c.type
    return None


def _condition(job: k8s.V1Job | None, type_: str) -> k8s.V1JobCondition | None:
    for c in (job.status.conditions if job and job.status else None) or []:
        if c.type == type_ and c.status == "True":
            return c
    return None


def _container_states(pod: k8s.V1Pod) -> list[k8s.V1ContainerState]:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return [cs.state for cs in statuses if cs.state is not None]


def _has_started(pod: k8s.V1Pod) -> bool:
    phase = pod.status.phase if pod.status else None
    if phase in ("Running", "Succeeded"):
        return True
    return any(s.running or s.terminated for s in _container_states(pod))


def _disruption(pod: k8s.V1Pod) -> str | None:
    """Why the platform ended this pod (evicted, preempted, node gone), or None."""
    st = pod.status
    if st is None:
        return None
    for c in st.conditions or []:
        if c.type == "DisruptionTarget" and c.status == "True":
            return f"{c.reason or 'disrupted'}: {c.message or ''}".rstrip(": ")
    reason = st.reason or ""
    if reason in _PLATFORM_REASONS or reason.startswith("OutOf"):
        return f"{reason}: {st.message or ''}".rstrip(": ")
    return None


def _storage_eviction(pod: k8s.V1Pod) -> str | None:
    """The kubelet's message when the pod outgrew its own ephemeral-storage or /tmp limit.

    That is the candidate's doing; node-wide pressure ("The node was low on resource") is not.
    """
    st = pod.status
    message = (st.message or "") if st else ""
    if st and st.reason == "Evicted" and "exceed" in message.lower():
        return message
    return None


def _pending_reason(pods: list[k8s.V1Pod]) -> str:
    for pod in pods:
        for state in _container_states(pod):
            if state.waiting and state.waiting.reason:
                return f"{state.waiting.reason}: {state.waiting.message or ''}".rstrip(": ")
        for c in (pod.status.conditions if pod.status else None) or []:
            if c.type == "PodScheduled" and c.status == "False":
                return f"{c.reason or 'not scheduled'}: {c.message or ''}".rstrip(": ")
    return "no pod was scheduled" if not pods else "pod still pending"


def classify(
    job: k8s.V1Job | None, pods: list[k8s.V1Pod], started: bool, pod_deleted: bool = False
) -> Report:
    """The outcome of a finished Job that left no report (the report, when present, wins).

    ``pods`` are the Job's pods as last seen; ``pod_deleted`` says one of them was deleted
    before it was seen to terminate.
    """
    deadline = _condition(job, "Failed")
    if deadline is not None and deadline.reason == "DeadlineExceeded":
        if not started:
            return _failure(
                common.STATUS_INTERNAL_ERROR,
                f"the pod never started before the Job deadline ({_pending_reason(pods)})",
            )
        limit = job.spec.active_deadline_seconds if job and job.spec else None
        return _failure(common.STATUS_WALL_TIMEOUT, f"the Job exceeded its deadline of {limit} s")
    for pod in pods:
        for state in _container_states(pod):
            if state.terminated and state.terminated.reason == "OOMKilled":
                return _failure(
                    common.STATUS_OUT_OF_MEMORY, "the container was OOM-killed (memory limit)"
                )
    for pod in pods:
        if (message := _storage_eviction(pod)) is not None:
            return _failure(common.STATUS_NO_RESULT, f"evicted for its disk use: {message}")
        if (why := _disruption(pod)) is not None:
            return _failure(common.STATUS_EVICTED, f"the pod was ended by the platform: {why}")
    for pod in pods:
        for state in _container_states(pod):
            t = state.terminated
            if t is None or t.exit_code == 0:
                continue
            if t.exit_code in _PLUMBING_EXITS:
                message = f"{_PLUMBING_EXITS[t.exit_code]} (exit {t.exit_code})"
                detail = f"{message}: {t.message or ''}".rstrip(": ")
                return _failure(common.STATUS_INTERNAL_ERROR, detail)
            detail = f" ({t.reason})" if t.reason and t.reason != "Error" else ""
            return _failure(
                common.STATUS_NO_RESULT,
                f"the pod failed with exit code {t.exit_code}{detail} and no report",
            )
    if _finished(job) == "Complete":
        return _failure(common.STATUS_NO_RESULT, "the pod finished without a report")
    failed = _condition(job, "Failed")
    if failed is not None and (pod_deleted or not pods):
        # Preemption and the eviction API delete the pod; a vanished pod is the platform's.
        return _failure(
            common.STATUS_EVICTED, f"the pod vanished ({failed.reason}: {failed.message})"
        )
    why = f"{failed.reason}: {failed.message}" if failed is not None else "unknown"
    return _failure(common.STATUS_NO_RESULT, f"the Job failed without a report ({why})")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


class KubernetesExecutor:
    """Runs each evaluation as a Kubernetes Job; see the module docstring for the lifecycle.

    ``store`` holds the evaluation objects and the datasets' sandbox files (uploaded on first
    use). ``presigner`` signs the pods' URLs: the store itself, unless pods reach the store at
    another endpoint (``cfg.pod_store_endpoint``; build it with :func:`pod_presigner`).
    """

    kind: int = evaluator_pb2.EXECUTOR_KUBERNETES_JOB

    def __init__(
        self,
        api: k8s.ApiClient,
        store: ObjectStore,
        cfg: KubernetesConfig,
        *,
        evaluator: EvaluatorConfig | None = None,
        presigner: ObjectStore | None = None,
    ) -> None:
        if presigner is None and cfg.pod_store_endpoint:
            raise ExecutorError(
                "kubernetes.pod_store_endpoint is set: pass presigner=pod_presigner(...) so the "
                "pods' URLs are signed for that endpoint"
            )
        presigner = presigner if presigner is not None else store
        if not (
            hasattr(presigner, "presigned_get_url") and hasattr(presigner, "presigned_put_url")
        ):
            raise ExecutorError(
                f"cluster mode needs an object store that can presign URLs (S3); "
                f"{type(presigner).__name__} cannot: pods have no other way to reach it"
            )
        self.api = api
        self._owns_api = False  # executor_from_config sets it for the client it builds
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.store = store
        self.presigner = presigner
        self.cfg = cfg
        self.evaluator = evaluator if evaluator is not None else EvaluatorConfig()
        self._datasets_lock = threading.Lock()
        self._datasets: set[str] = set()  # dataset keys known to be in the store

    # -- public ------------------------------------------------------------------------------
    def run(self, task: Task, dataset: Prepared, cancelled: threading.Event) -> tuple[Report, str]:
        """Evaluate ``task`` on ``dataset`` in a Job; return the report and the Job's name.
        Never leaves the Job or the evaluation's objects behind."""
        name = manifests.job_name(task.candidate_id)
        prefix = layout.evaluation_prefix(name)
        created = False
        try:
            if cancelled.is_set():
                return _failure(common.STATUS_CANCELLED, "cancelled before the Job started"), name
            self._ensure_dataset(dataset)
            manifest = self._prepare(task, dataset, name, prefix)
            try:
                self.batch.create_namespaced_job(self.cfg.namespace, manifest)
            except (urllib3.exceptions.HTTPError, OSError):
                created = True  # the request may have reached the server: delete what exists
                raise
            created = True
            log.info("evaluation job %s created for candidate %s", name, task.candidate_id)
            return self._wait(name, prefix, manifest, cancelled), name
        except (StoreError, ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("evaluation job %s failed: %s", name, e)
            return _failure(common.STATUS_INTERNAL_ERROR, f"cluster executor: {_describe(e)}"), name
        finally:
            self._cleanup(name, prefix, created)

    def close(self) -> None:
        """Release the API client's connections if this executor built it."""
        if self._owns_api:
            self._owns_api = False
            self.api.close()

    # -- steps -------------------------------------------------------------------------------
    def _ensure_dataset(self, dataset: Prepared) -> None:
        """Put the dataset's sandbox file in the store once (its key names its digest).

        The lock is held across the upload so that concurrent runs wait for it rather than
        uploading the same file again."""
        key = dataset.key
        with self._datasets_lock:
            if key in self._datasets:
                return
            if not self.store.exists(key):
                log.info("uploading dataset %s to %s", dataset.sandbox_file, key)
                self.store.put_file(key, dataset.sandbox_file)
            self._datasets.add(key)

    def _prepare(self, task: Task, dataset: Prepared, name: str, prefix: str) -> dict:
        task_key = join_key(prefix, "task.json")
        self.store.put_bytes(task_key, task.to_json().encode())
        time_limit_s = task.wall_limit_s(self.evaluator.probe_time_limit_s)
        # The report URL must outlive the Job: url_expiry_s is a floor, not a cap.
        deadline_s = manifests.active_deadline_s(self.cfg, time_limit_s)
        expiry = min(max(self.cfg.url_expiry_s, deadline_s + URL_MARGIN_S), MAX_URL_EXPIRY_S)
        sign = self.presigner
        return manifests.job_manifest(
            self.cfg,
            name,
            task.candidate_id,
            task_url=sign.presigned_get_url(task_key, expiry),
            data_url=sign.presigned_get_url(dataset.key, expiry),
            result_url=sign.presigned_put_url(join_key(prefix, "report.bin"), expiry),
            time_limit_s=time_limit_s,
            extra_env=sandbox_env(self.evaluator),
        )

    def _wait(self, name: str, prefix: str, manifest: dict, cancelled: threading.Event) -> Report:
        start = time.monotonic()
        deadline_s = manifest["spec"]["activeDeadlineSeconds"]
        # Only if the Job controller never ends the Job (it should at activeDeadlineSeconds).
        give_up = start + deadline_s + max(60, self.cfg.deadline_slack_s)
        slack = self.cfg.deadline_slack_s
        watch = _Watch()
        pause = 0.0  # the first look is immediate
        while True:
            if cancelled.wait(pause):
                log.info("evaluation job %s cancelled", name)
                return _failure(common.STATUS_CANCELLED, "cancelled while the Job ran")
            try:
                self._poll(name, watch)
            except ApiException as e:
                if e.status == 404:
                    return self._outcome(name, prefix, watch, vanished=True)
                if not _transient(e):
                    raise
                log.warning("polling job %s: %s (will retry)", name, _describe(e))
            except (urllib3.exceptions.HTTPError, OSError) as e:
                log.warning("polling job %s: %s (will retry)", name, _describe(e))
            pause = self.cfg.poll_interval_s
            if _finished(watch.job):
                return self._outcome(name, prefix, watch)
            pods = list(watch.pods.values())
            if not watch.started:
                waiting = _pending_reason(pods)
                fatal = waiting.split(":", 1)[0] in _FATAL_WAITING
                if fatal or (slack > 0 and time.monotonic() - start > slack):
                    return _failure(
                        common.STATUS_INTERNAL_ERROR,
                        f"the pod did not start within {slack} s ({waiting})"
                        if not fatal
                        else f"the pod cannot start ({waiting})",
                    )
            if time.monotonic() > give_up:
                return _failure(
                    common.STATUS_INTERNAL_ERROR, f"the Job did not finish within {deadline_s} s"
                )

    def _poll(self, name: str, watch: _Watch) -> None:
        ns = self.cfg.namespace
        watch.job = self.batch.read_namespaced_job(name, ns)
        listed = {
            pod.metadata.name: pod
            for pod in self.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
        }
        watch.gone |= watch.pods.keys() - listed.keys()
        watch.pods.update(listed)
        watch.started = watch.started or any(_has_started(p) for p in listed.values())

    def _outcome(self, name: str, prefix: str, watch: _Watch, vanished: bool = False) -> Report:
        pods = list(watch.pods.values())
        try:
            data = self.store.get_bytes(join_key(prefix, "report.bin"))
        except ObjectNotFound:
            data = None
        if data is not None:
            try:
                report = wire.decode(data)
            except wire.ReportError as e:
                report = _failure(common.STATUS_NO_RESULT, f"the pod's report is malformed: {e}")
        elif vanished:
            report = _failure(common.STATUS_INTERNAL_ERROR, f"the Job {name} was deleted meanwhile")
        else:
            report = classify(watch.job, pods, watch.started, bool(watch.gone))
        # The report carries the candidate's output tail; the pod log is the fallback (a report
        # the pod wrote about its own failure, or none at all).
        if not report.output_tail and pods:
            report.output_tail = self._log_tail(pods[-1].metadata.name)
        log.info(
            "evaluation job %s: stage %s, status %s",
            name,
            common.Stage.Name(report.last_stage),
            common.Status.Name(report.status),
        )
        return report

    def _log_tail(self, pod_name: str) -> str:
        """The end of the pod's log (pod.py prints the candidate's output tail there)."""
        limit = self.evaluator.output_tail_bytes
        if not limit:
            return ""
        try:
            # Raw bytes: the client would otherwise try to parse a log that looks like JSON.
            resp = self.core.read_namespaced_pod_log(
                pod_name,
                self.cfg.namespace,
                container=manifests.CONTAINER,
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=LOG_LIMIT_BYTES,
                _preload_content=False,
            )
            data = resp.data
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            log.debug("no log for pod %s: %s", pod_name, _describe(e))
            return ""
        return bytes(data)[-limit:].decode(errors="replace")

    def _cleanup(self, name: str, prefix: str, created: bool) -> None:
        if created:
            try:
                self.batch.delete_namespaced_job(
                    name, self.cfg.namespace, propagation_policy=PROPAGATION
                )
            except ApiException as e:
                if e.status != 404:
                    log.error("could not delete evaluation job %s: %s", name, _describe(e))
            except (urllib3.exceptions.HTTPError, OSError) as e:
                log.error("could not delete evaluation job %s: %s", name, _describe(e))
        try:  # only this evaluation's objects: the dataset is shared and stays
            self.store.delete_prefix(prefix + "/")
        except StoreError as e:
            log.error("could not delete the objects of evaluation %s: %s", name, e)


def executor_from_config(
    config: Config, store: ObjectStore, api: k8s.ApiClient | None = None
) -> KubernetesExecutor:
    """The executor as the evaluator's configuration describes it; it closes the API client
    it builds (not one passed in) when it is closed."""
    kube = config.evaluator.kubernetes
    presigner = (
        pod_presigner(config.store, kube.pod_store_endpoint) if kube.pod_store_endpoint else None
    )
    client = api if api is not None else kube_api_client()
    try:
        executor = KubernetesExecutor(
            client, store, kube, evaluator=config.evaluator, presigner=presigner
        )
    except BaseException:
        if api is None:
            client.close()
        raise
    executor._owns_api = api is None
    return executor


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        return f"Kubernetes API {exc.status} {exc.reason}: {str(body or '')[:300]}"
    return f"{type(exc).__name__}: {exc}"
