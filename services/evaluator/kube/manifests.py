"""Manifests for cluster mode: the hardened Job that runs one evaluation.

Its pods carry the labels that the Helm chart's default-deny NetworkPolicy selects
(``deploy/helm/nasloop/templates/networkpolicy.yaml``; tests/deploy checks that it selects them):
nasloop's own and those of ``evaluator.kubernetes.labels`` (the chart sets its release's instance
label there). GPU Jobs request ``gpu_resource`` (``gpus`` of it); pull secrets, node selector,
tolerations, affinity and priority class come from the same section
(:func:`nasloop.kubeapi.place_pod`).

Pure functions from configuration to plain dicts (what ``kubectl apply`` and the ``kubernetes``
client both accept), so they can be checked against the Kubernetes schemas without a cluster.

Failure policy of the Job: ``backoffLimit`` is 0, so a failed pod fails the Job and the launcher
classifies what happened; a retry is the evaluator's decision (with a fresh time budget), never
the Job controller's. The explicit ``podFailurePolicy`` makes that visible and fixes the order:

1. a pod with the ``DisruptionTarget`` condition (preempted, evicted, its node drained) is
   ``Count``-ed, not ``Ignore``-d. ``Ignore`` would make the Job controller start a replacement
   pod inside the same ``activeDeadlineSeconds``, so a preempted candidate would get less time
   and a later timeout would be blamed on it. Counted, the Job fails at once and the launcher
   reports ``STATUS_EVICTED`` (retryable, not the candidate's fault). This rule comes first
   because an evicted container also exits nonzero (SIGTERM/SIGKILL).
2. any nonzero exit of the sandbox container is ``FailJob`` (pod plumbing failed, or the
   container was OOM-killed); the launcher reads the reason from the pod.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

from nasloop.config import KubernetesConfig
from nasloop.kubeapi import job_labels, locked_container_security, locked_pod_spec, place_pod

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_CANDIDATE = "nasloop.io/candidate"
ANNOTATION_CANDIDATE_ID = "nasloop.io/candidate-id"
APP = "nasloop"
COMPONENT = "evaluator-sandbox"
CONTAINER = "sandbox"
SANDBOX_UID = 65534  # "nobody": no files in the image belong to it
JOB_PREFIX = "eval-"
TERMINATION_GRACE_S = 5

ENV_TASK_URL = "NASLOOP_TASK_URL"
ENV_DATA_URL = "NASLOOP_DATA_URL"
ENV_RESULT_URL = "NASLOOP_RESULT_URL"
POD_COMMAND = ["python", "-m", "services.evaluator.pod"]

_MAX_NAME = 63  # DNS-1123 label; pods get a `job-name` label, which has the same limit
_SUFFIX_CHARS = 8
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(name: str) -> bool:
    """Whether ``name`` is a valid DNS-1123 label (what Job names must be here)."""
    return len(name) <= _MAX_NAME and _DNS_LABEL.match(name) is not None


def job_name(candidate_id: str, suffix: str | None = None) -> str:
    """``eval-<slug of the candidate id>-<random hex>``: a DNS-1123 label of at most 63 chars.

    The random suffix keeps names unique when the same candidate is evaluated again.
    """
    suffix = suffix if suffix is not None else secrets.token_hex(_SUFFIX_CHARS // 2)
    if not _DNS_LABEL.match(suffix):
        raise ValueError(f"job name suffix {suffix!r} is not a DNS-1123 label")
    room = _MAX_NAME - len(JOB_PREFIX) - len(suffix) - 1
    slug = re.sub(r"[^a-z0-9]+", "-", candidate_id.lower()).strip("-")[:room].strip("-")
    name = f"{JOB_PREFIX}{slug}-{suffix}" if slug else f"{JOB_PREFIX}{suffix}"
    if not is_dns_label(name):
        raise ValueError(f"cannot build a job name from suffix {suffix!r}")
    return name


def candidate_label(candidate_id: str) -> str:
    """The candidate id as a label value; changed ids get a hash so they stay distinguishable."""
    if len(candidate_id) <= _MAX_NAME and _LABEL_VALUE.match(candidate_id):
        return candidate_id
    digest = hashlib.sha256(candidate_id.encode()).hexdigest()[:10]
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", candidate_id)[: _MAX_NAME - len(digest) - 1]
    clean = clean.strip("-_.")
    return f"{clean}-{digest}" if clean else digest


def labels(candidate_id: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP,
        LABEL_COMPONENT: COMPONENT,
        LABEL_CANDIDATE: candidate_label(candidate_id),
    }


def active_deadline_s(cfg: KubernetesConfig, time_limit_s: float) -> int:
    """The pod trains within the time limit, then scores within it again (services/evaluator/
    pod.py gives its runner twice the limit), plus the slack for pulling and starting."""
    return 2 * math.ceil(time_limit_s) + cfg.deadline_slack_s


def job_manifest(
    cfg: KubernetesConfig,
    name: str,
    candidate_id: str,
    *,
    task_url: str,
    data_url: str,
    result_url: str,
    time_limit_s: float,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job that evaluates one candidate in a locked-down pod.

    The pod holds no credentials: it reads its task and dataset and writes its report through
    presigned URLs, each valid for one object and a limited time. ``extra_env`` carries
    harmless settings (e.g. ``NASLOOP_EVALUATOR__MEMORY_BYTES``); it cannot replace the URLs.
    """
    if not is_dns_label(name):
        raise ValueError(f"job name {name!r} is not a DNS-1123 label of at most 63 characters")
    if not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise ValueError(f"time limit must be a positive number of seconds, got {time_limit_s}")
    env = {
        ENV_TASK_URL: task_url,
        ENV_DATA_URL: data_url,
        ENV_RESULT_URL: result_url,
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the root filesystem is read-only
    }
    for key, value in (extra_env or {}).items():
        if key in env:
            raise ValueError(f"extra_env may not set {key}")
        env[key] = str(value)

    resources = {
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "ephemeral-storage": cfg.ephemeral_storage,
    }
    if cfg.gpus > 0:
        resources[cfg.gpu_resource] = str(cfg.gpus)

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": list(POD_COMMAND),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        # Requests equal to limits: Guaranteed QoS, so the candidate is confined by its own
        # cgroup and is never the first victim of someone else's memory pressure.
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": locked_container_security(SANDBOX_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    # pod.py runs as PID 1, which ignores SIGTERM: a deleted pod would otherwise linger for the
    # default 30 s. Nothing in it needs a graceful stop.
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": cfg.tmp_size}}]
    pod_spec = locked_pod_spec(SANDBOX_UID, container, volumes, TERMINATION_GRACE_S)
    if cfg.service_account:
        pod_spec["serviceAccountName"] = cfg.service_account
    if cfg.runtime_class:
        pod_spec["runtimeClassName"] = cfg.runtime_class
    gpu_taint = {"key": cfg.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}
    place_pod(pod_spec, cfg, [gpu_taint] if cfg.gpus > 0 and cfg.tolerate_gpu_taint else [])

    meta_labels = job_labels(cfg, labels(candidate_id))
    annotations = {ANNOTATION_CANDIDATE_ID: candidate_id[:253]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": dict(meta_labels),
            "annotations": dict(annotations),
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": active_deadline_s(cfg, time_limit_s),
            "ttlSecondsAfterFinished": cfg.ttl_after_finished_s,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Count",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "NotIn",
                            "values": [0],
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": dict(meta_labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }
