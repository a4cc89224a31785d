"""Kubernetes plumbing for the parts that run things as Jobs (evaluator, controller): the API
client, and the locked-down pod that both kinds of Job run."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a client is made: the evaluation pod's image has no client
    from kubernetes import client as k8s

from nasloop.config import JobPlacement


def kube_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: in-cluster service account when running in a pod (and no
    kubeconfig is named), otherwise the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import client as k8s
    from kubernetes import config as kube_config

    configuration = k8s.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return k8s.ApiClient(configuration)


def locked_container_security(uid: int) -> dict[str, Any]:
    """A container's securityContext under Pod Security "restricted", plus a read-only root:
    non-root ``uid``, no privilege escalation, every capability dropped."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def locked_pod_spec(
    uid: int,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    termination_grace_s: int,
) -> dict[str, Any]:
    """The spec of a run-once pod that holds nothing of its node or of the cluster: no
    service-account token, no service links, no host namespaces, non-root ``uid``."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def job_labels(placement: JobPlacement, own: dict[str, str]) -> dict[str, str]:
    """The labels of a Job and its pod: ``placement.labels`` (e.g. the Helm release's
    instance label, which the chart's NetworkPolicies match) under nasloop's ``own``."""
    return {**placement.labels, **own}


def place_pod(
    pod_spec: dict[str, Any], placement: JobPlacement, tolerations: Sequence[dict[str, Any]] = ()
) -> None:
    """Add to ``pod_spec`` where it may run and how it pulls its image: pull secrets, node
    selector, ``placement.tolerations`` then ``tolerations`` (without duplicates), affinity and
    priority class, each only when set."""
    if placement.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in placement.image_pull_secrets]
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    tolerate: list[dict[str, Any]] = []
    for t in [*placement.tolerations, *tolerations]:
        if t not in tolerate:
            tolerate.append(dict(t))
    if tolerate:
        pod_spec["tolerations"] = tolerate
    if placement.affinity:
        pod_spec["affinity"] = copy.deepcopy(placement.affinity)
    if placement.priority_class:
        pod_spec["priorityClassName"] = placement.priority_class
