"""Kubernetes plumbing for the parts that run things as Jobs (evaluator, controller): the API
client, and the locked-down pod that both kinds of Job run."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client as k8s


def kube_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: in-cluster service account when running in a pod (and no
    kubeconfig is named), otherwise the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
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
