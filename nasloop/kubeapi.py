"""The Kubernetes API client, for the parts that run things as Jobs (evaluator, controller)."""

from __future__ import annotations

import os

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
