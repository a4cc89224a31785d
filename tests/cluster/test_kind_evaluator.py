"""Cluster mode against a REAL Kubernetes cluster (kind): run only by ``make kind-e2e``.

Marked ``cluster``, so ``make test`` skips it. It uses the current kubeconfig, and the nasloop
configuration from the environment (``NASLOOP_CONFIG`` or ``NASLOOP_*`` variables), which must
name an ``s3://`` store that both this process and the cluster's pods reach (set
``NASLOOP_EVALUATOR__KUBERNETES__POD_STORE_ENDPOINT`` when pods see it at another address), the
evaluation pod's image (``NASLOOP_EVALUATOR__KUBERNETES__IMAGE``, an evaluator-pod-* image) loaded
into the cluster, and its namespace. With ``NASLOOP_EVALUATOR__KUBERNETES__GPUS=0`` the candidate
trains on CPU.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubecase import NUM_CLASSES, TEST, make_task, tiny_prepared
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from nasloop.config import Config, load_config
from nasloop.store import ObjectStore, open_store
from nasloop.v1 import common_pb2 as common
from services.evaluator.datasets import Prepared
from services.evaluator.kube.launcher import (
    KubernetesExecutor,
    executor_from_config,
    kube_api_client,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def config() -> Config:
    cfg = load_config()
    if not cfg.store.url.startswith("s3://"):
        pytest.skip("needs an s3:// store reachable from the cluster (NASLOOP_STORE__URL)")
    return cfg


@pytest.fixture(scope="module")
def api() -> k8s.ApiClient:
    return kube_api_client()


@pytest.fixture
def dataset(tmp_path: Path) -> Prepared:
    # A name of its own, so the executor uploads it (datasets/<name>/<digest>/sandbox.npz).
    return tiny_prepared(tmp_path / "data", name=f"kind-e2e-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def setup(
    config: Config, api: k8s.ApiClient, dataset: Prepared
) -> Iterator[tuple[KubernetesExecutor, ObjectStore]]:
    store = open_store(config.store)
    executor = executor_from_config(config, store, api=api)
    try:
        yield executor, store
    finally:
        executor.close()
        store.delete(dataset.key)


def device(config: Config) -> str:
    return "cuda" if config.evaluator.kubernetes.gpus > 0 else "cpu"


def job_exists(api: k8s.ApiClient, namespace: str, name: str) -> bool:
    try:
        k8s.BatchV1Api(api).read_namespaced_job(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def test_kind_job_trains_a_candidate_and_reports(
    config: Config,
    api: k8s.ApiClient,
    setup: tuple[KubernetesExecutor, ObjectStore],
    dataset: Prepared,
) -> None:
    executor, store = setup
    task = make_task(f"kind-e2e-{uuid.uuid4().hex[:8]}", time_limit_s=300, device=device(config))
    report, name = executor.run(task, dataset, threading.Event())
    assert report.status in (common.STATUS_OK, common.STATUS_UNSPECIFIED), (
        common.Status.Name(report.status),
        report.message,
        report.output_tail,
    )
    assert report.last_stage >= common.STAGE_TRAINED
    assert report.outputs is not None and report.outputs.shape == (TEST, NUM_CLASSES)
    assert not job_exists(api, config.evaluator.kubernetes.namespace, name)
    assert store.list(f"evaluations/{name}/") == []
    assert store.exists(dataset.key)  # uploaded once, shared, not cleaned up


def test_kind_cancelled_job_is_deleted(
    config: Config,
    api: k8s.ApiClient,
    setup: tuple[KubernetesExecutor, ObjectStore],
    dataset: Prepared,
) -> None:
    executor, store = setup
    spin = "import time\nwhile True:\n    time.sleep(1)\n"
    task = make_task(f"kind-cancel-{uuid.uuid4().hex[:8]}", code=spin, device=device(config))
    cancelled = threading.Event()
    timer = threading.Timer(20, cancelled.set)
    timer.start()
    started = time.monotonic()
    try:
        report, name = executor.run(task, dataset, cancelled)
    finally:
        timer.cancel()
    assert report.status == common.STATUS_CANCELLED
    assert time.monotonic() - started < 60
    assert not job_exists(api, config.evaluator.kubernetes.namespace, name)
    assert store.list(f"evaluations/{name}/") == []
