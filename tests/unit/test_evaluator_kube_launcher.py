"""KubernetesExecutor against a FAKE Kubernetes API (tests/kubefake.py) and a real S3 endpoint.

There is no Kubernetes cluster on these machines: the fake plays the API server, scheduler,
kubelet and Job controller, driven by each test. The object store is moto's S3 server, so the
presigned URLs are real and are used the way a pod uses them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from kubecase import make_task, tiny_prepared
from kubefake import FakeKubeAPI
from s3auth import SignedS3

from nasloop.config import KubernetesConfig, StoreConfig
from nasloop.store import LocalStore, S3Store, StoreError
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2
from services.evaluator import pod as pod_entry
from services.evaluator import report as wire
from services.evaluator.datasets import Prepared
from services.evaluator.kube import manifests
from services.evaluator.kube.launcher import (
    ExecutorError,
    KubernetesExecutor,
    executor_from_config,
    pod_presigner,
)
from services.evaluator.report import Report

NS = "nasloop"


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        yield api
        api.check()


@pytest.fixture
def store(s3_signed_store: S3Store) -> S3Store:
    """On the S3 server that checks presigned URLs' signatures (tests/s3auth.py)."""
    return s3_signed_store


@pytest.fixture
def dataset(tmp_path: Path) -> Prepared:
    """The tiny dataset, prepared locally; the executor uploads it on first use."""
    return tiny_prepared(tmp_path / "data")


def executor(fake: FakeKubeAPI, store: S3Store, **cfg: Any) -> KubernetesExecutor:
    settings = {"namespace": NS, "poll_interval_s": 0.02, "deadline_slack_s": 60, **cfg}
    return KubernetesExecutor(fake.api_client(), store, KubernetesConfig(**settings))


def upload(fake: FakeKubeAPI, name: str, data: bytes) -> None:
    """Do what the pod does: PUT the report to the presigned URL of the Job's environment."""
    pod_entry.http_put(fake.env_of(name)["NASLOOP_RESULT_URL"], data)


def run(
    fake: FakeKubeAPI,
    store: S3Store,
    dataset: Prepared,
    script: Callable[[FakeKubeAPI, str], None],
    cancelled: threading.Event | None = None,
    **cfg: Any,
) -> tuple[Report, str]:
    fake.on_create = lambda api, job: script(api, job["metadata"]["name"])
    ex = executor(fake, store, **cfg)
    report, name = ex.run(make_task(), dataset, cancelled or threading.Event())
    assert manifests.is_dns_label(name)
    # Always cleaned up: the Job (with its pods) and the evaluation's objects.
    assert (NS, name) not in fake.jobs and not fake.pods_of(name)
    assert [d[1] for d in fake.deleted] == [name]
    assert fake.deleted[0][2] in ("Background", "Foreground")
    assert store.list("evaluations/") == []
    # The dataset is shared by all evaluations: uploaded, and never cleaned up.
    assert store.get_bytes(dataset.key) == dataset.sandbox_file.read_bytes()
    return report, name


def sandbox_report() -> Report:
    r = Report(parameter_count=1234, loss=1.5, train_seconds=2.0)
    r.passed(common.STAGE_TRAINED, 2.0)
    r.outputs = np.arange(20, dtype=np.float32).reshape(2, 10)
    return r


def test_fake_kube_success_report_is_decoded(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        env = api.env_of(name)
        # The pod's URLs really work: it can read its task and the dataset.
        assert make_task().to_json().encode() == pod_entry.http_get(env["NASLOOP_TASK_URL"])
        assert pod_entry.http_get(env["NASLOOP_DATA_URL"]) == dataset.sandbox_file.read_bytes()
        api.start_pod(name)
        upload(api, name, wire.encode(sandbox_report()))
        api.succeed(name, log="epoch 1 done\ncandidate says hi\n")

    report, name = run(fake, store, dataset, pod)
    assert report.last_stage == common.STAGE_TRAINED
    assert report.parameter_count == 1234
    np.testing.assert_array_equal(report.outputs, sandbox_report().outputs)
    assert "candidate says hi" in report.output_tail
    (manifest,) = fake.created
    assert manifest["metadata"]["name"] == name
    assert manifest["metadata"]["labels"]["nasloop.io/candidate"] == "run1-cand7"
    assert manifest["spec"]["activeDeadlineSeconds"] == 2 * 60 + 60  # train, then score
    env = {
        e["name"]: e["value"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert f"evaluations/{name}/report.bin" in env["NASLOOP_RESULT_URL"]
    assert env["NASLOOP_EVALUATOR__MEMORY_BYTES"] == str(4 << 30)
    assert ("GET", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}") in fake.requests
    assert ("GET", f"/api/v1/namespaces/{NS}/pods") in fake.requests


def test_fake_kube_report_wins_even_if_the_job_failed(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)
        upload(api, name, wire.encode(pod_entry.internal_error("pod could not fetch")))
        api.fail(name, pod_entry.EXIT_RUN)

    report, _ = run(fake, store, dataset, pod)
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert "could not fetch" in report.message


def test_fake_kube_malformed_report_is_no_result(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)
        upload(api, name, b"NLR1garbage")
        api.succeed(name)

    report, _ = run(fake, store, dataset, pod)
    assert report.status == common.STATUS_NO_RESULT
    assert report.last_stage == common.STAGE_POLICY
    assert "malformed" in report.message


@pytest.mark.parametrize(
    ("script", "status", "words"),
    [
        (lambda api, n: (api.start_pod(n), api.oom_kill(n)), common.STATUS_OUT_OF_MEMORY, "OOM"),
        (
            lambda api, n: (api.start_pod(n), api.deadline_exceeded(n)),
            common.STATUS_WALL_TIMEOUT,
            "deadline of 180 s",
        ),
        (lambda api, n: (api.start_pod(n), api.evict(n)), common.STATUS_EVICTED, "low on resource"),
        (
            lambda api, n: (
                api.start_pod(n),
                api.evict(n, message='Usage of EmptyDir volume "tmp" exceeds the limit "1Gi".'),
            ),
            common.STATUS_NO_RESULT,
            "disk use",
        ),
        (lambda api, n: (api.start_pod(n), api.fail(n, 1)), common.STATUS_NO_RESULT, "exit code 1"),
        (
            lambda api, n: (api.start_pod(n), api.fail(n, pod_entry.EXIT_DOWNLOAD)),
            common.STATUS_INTERNAL_ERROR,
            "could not fetch",
        ),
        (
            lambda api, n: (api.start_pod(n), api.succeed(n)),
            common.STATUS_NO_RESULT,
            "without a report",
        ),
        (
            lambda api, n: (api.start_pod(n), api.fail(n, pod_entry.EXIT_UPLOAD)),
            common.STATUS_INTERNAL_ERROR,
            "could not upload",
        ),
        (
            lambda api, n: (
                api.set_pending(n, waiting="ImagePullBackOff"),
                api.finish_job(n, False, "DeadlineExceeded", "too long"),
            ),
            common.STATUS_INTERNAL_ERROR,
            "never started",
        ),
    ],
    ids=[
        "oomkilled",
        "deadline",
        "evicted",
        "evicted-for-disk",
        "failed",
        "download-failed",
        "complete-no-report",
        "upload-failed",
        "deadline-never-started",
    ],
)
def test_fake_kube_outcome_without_report(
    fake: FakeKubeAPI,
    store: S3Store,
    dataset: Prepared,
    script: Callable[[FakeKubeAPI, str], object],
    status: int,
    words: str,
) -> None:
    report, _ = run(fake, store, dataset, script)
    assert common.Status.Name(report.status) == common.Status.Name(status), report.message
    assert report.last_stage == common.STAGE_POLICY
    assert words.lower() in report.message.lower()


def test_fake_kube_preempted_pod_that_vanished_is_evicted(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)

        def preempt() -> None:
            api.delete_pods(name)
            api.finish_job(name, False, "BackoffLimitExceeded", "Job has reached the backoff limit")

        threading.Timer(0.2, preempt).start()

    report, _ = run(fake, store, dataset, pod)
    assert report.status == common.STATUS_EVICTED


@pytest.mark.parametrize(
    ("pending", "slack", "words"),
    [
        ({"waiting": "InvalidImageName"}, 60, "cannot start"),
        ({"waiting": "ImagePullBackOff"}, 1, "did not start within 1 s"),
        ({"unschedulable": "0/3 nodes have free nvidia.com/gpu"}, 1, "nvidia.com/gpu"),
    ],
)
def test_fake_kube_pod_that_cannot_start_is_internal_error(
    fake: FakeKubeAPI,
    store: S3Store,
    dataset: Prepared,
    pending: dict[str, str],
    slack: int,
    words: str,
) -> None:
    report, _ = run(
        fake, store, dataset, lambda api, n: api.set_pending(n, **pending), deadline_slack_s=slack
    )
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert report.last_stage == common.STAGE_POLICY
    assert words in report.message


def test_fake_kube_cancellation_deletes_the_job(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    cancelled = threading.Event()
    running = threading.Event()

    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)
        running.set()
        threading.Timer(0.2, cancelled.set).start()

    report, name = run(fake, store, dataset, pod, cancelled=cancelled)
    assert running.is_set()
    assert report.status == common.STATUS_CANCELLED
    assert fake.deleted == [(NS, name, "Background")]


def test_fake_kube_cancelled_before_start_creates_nothing(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    cancelled = threading.Event()
    cancelled.set()
    report, _ = executor(fake, store).run(make_task(), dataset, cancelled)
    assert report.status == common.STATUS_CANCELLED
    assert fake.created == [] and fake.deleted == []
    assert store.list("evaluations/") == []
    assert not store.exists(dataset.key)


def test_fake_kube_create_refused_is_internal_error(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    fake.create_errors.append(403)
    report, _ = executor(fake, store).run(make_task(), dataset, threading.Event())
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert "403" in report.message
    assert fake.deleted == []
    assert store.list("evaluations/") == []


def test_fake_kube_transient_poll_errors_are_retried(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.get_errors.extend([500, 503])
        api.start_pod(name)
        upload(api, name, wire.encode(sandbox_report()))
        api.succeed(name)

    report, _ = run(fake, store, dataset, pod)
    assert report.last_stage == common.STAGE_TRAINED
    assert fake.get_errors == []


def test_fake_kube_job_deleted_by_someone_else(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)
        threading.Timer(0.1, lambda: api.delete_job(NS, name, "Background")).start()

    fake.on_create = lambda api, job: pod(api, job["metadata"]["name"])
    report, _ = executor(fake, store).run(make_task(), dataset, threading.Event())
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert "deleted" in report.message
    assert store.list("evaluations/") == []


def test_fake_kube_presigned_urls_for_the_pod_endpoint(
    fake: FakeKubeAPI, store: S3Store, signed_s3: SignedS3, dataset: Prepared
) -> None:
    """Pods reach the store at another host name: URLs are signed for it and still work (the S3
    server checks the host they were signed for)."""
    s3_store, s3_endpoint = store, signed_s3.endpoint
    port = s3_endpoint.rsplit(":", 1)[1]
    pod_endpoint = f"localhost:{port}"
    store_cfg = StoreConfig(
        url=f"s3://{s3_store.bucket}",
        endpoint=s3_endpoint,
        access_key=signed_s3.access_key,
        secret_key=signed_s3.secret_key,
        region=signed_s3.region,
    )
    cfg = KubernetesConfig(namespace=NS, poll_interval_s=0.02, pod_store_endpoint=pod_endpoint)
    with pytest.raises(ExecutorError, match="presigner"):
        KubernetesExecutor(fake.api_client(), s3_store, cfg)
    ex = KubernetesExecutor(
        fake.api_client(), s3_store, cfg, presigner=pod_presigner(store_cfg, pod_endpoint)
    )

    def pod(api: FakeKubeAPI, name: str) -> None:
        env = api.env_of(name)
        assert all(env[k].startswith(f"http://{pod_endpoint}/") for k in manifests_urls())
        assert pod_entry.http_get(env["NASLOOP_DATA_URL"]) == dataset.sandbox_file.read_bytes()
        api.start_pod(name)
        upload(api, name, wire.encode(sandbox_report()))
        api.succeed(name)

    fake.on_create = lambda api, job: pod(api, job["metadata"]["name"])
    report, _ = ex.run(make_task(), dataset, threading.Event())
    assert report.last_stage == common.STAGE_TRAINED
    assert s3_store.list("evaluations/") == []


def manifests_urls() -> tuple[str, ...]:
    return (manifests.ENV_TASK_URL, manifests.ENV_DATA_URL, manifests.ENV_RESULT_URL)


def test_store_without_presigning_is_refused(fake: FakeKubeAPI, local_store: LocalStore) -> None:
    with pytest.raises(ExecutorError, match="presign"):
        KubernetesExecutor(fake.api_client(), local_store, KubernetesConfig())


def test_fake_kube_urls_outlive_the_job_deadline(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        for var in manifests_urls():
            query = parse_qs(urlsplit(api.env_of(name)[var]).query)
            assert int(query["X-Amz-Expires"][0]) == 2 * 3600 + 60 + 300  # train, then score
        api.start_pod(name)
        api.succeed(name)

    fake.on_create = lambda api, job: pod(api, job["metadata"]["name"])
    report, _ = executor(fake, store, url_expiry_s=900).run(
        make_task(time_limit_s=3600), dataset, threading.Event()
    )
    assert report.status == common.STATUS_NO_RESULT


def test_fake_kube_forbidden_poll_is_internal_error(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.get_errors.append(403)
        api.start_pod(name)

    report, _ = run(fake, store, dataset, pod)
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert "403" in report.message


def succeed_with_report(api: FakeKubeAPI, name: str) -> None:
    api.start_pod(name)
    upload(api, name, wire.encode(sandbox_report()))
    api.succeed(name, log="from the pod log\n")


def count_uploads(store: S3Store, monkeypatch: pytest.MonkeyPatch, key: str) -> list[str]:
    """Record every write of ``key`` (put_file goes through put_bytes)."""
    writes: list[str] = []
    put_bytes = store.put_bytes

    def spy(k: str, data: bytes) -> Any:
        if k == key:
            writes.append(k)
        return put_bytes(k, data)

    monkeypatch.setattr(store, "put_bytes", spy)
    return writes


def test_fake_kube_dataset_uploaded_once_and_kept(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = count_uploads(store, monkeypatch, dataset.key)
    fake.on_create = lambda api, job: succeed_with_report(api, job["metadata"]["name"])
    ex = executor(fake, store)
    assert ex.kind == evaluator_pb2.EXECUTOR_KUBERNETES_JOB
    names = []
    for _ in range(2):
        report, name = ex.run(make_task(), dataset, threading.Event())
        assert report.last_stage == common.STAGE_TRAINED
        names.append(name)
    assert writes == [dataset.key]
    assert len(set(names)) == 2 and [d[1] for d in fake.deleted] == names
    # Cleanup removed each evaluation's objects but not the shared dataset.
    assert store.list("evaluations/") == []
    assert store.list("datasets/") == [dataset.key]
    assert store.get_bytes(dataset.key) == dataset.sandbox_file.read_bytes()
    for env in (
        {e["name"]: e["value"] for e in m["spec"]["template"]["spec"]["containers"][0]["env"]}
        for m in fake.created
    ):
        assert pod_entry.http_get(env["NASLOOP_DATA_URL"]) == dataset.sandbox_file.read_bytes()
    ex.close()  # the client was passed in: closing is harmless and leaves it to its owner


def test_fake_kube_dataset_already_in_store_is_not_uploaded(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_file(dataset.key, dataset.sandbox_file)
    writes = count_uploads(store, monkeypatch, dataset.key)
    report, _ = run(fake, store, dataset, succeed_with_report)
    assert report.last_stage == common.STAGE_TRAINED
    assert writes == []


def test_fake_kube_concurrent_runs_upload_the_dataset_once(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = count_uploads(store, monkeypatch, dataset.key)
    fake.on_create = lambda api, job: succeed_with_report(api, job["metadata"]["name"])
    ex = executor(fake, store)
    barrier = threading.Barrier(4)
    results: list[Report] = []

    def one(i: int) -> None:
        barrier.wait()
        results.append(ex.run(make_task(f"cand{i}"), dataset, threading.Event())[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.last_stage for r in results] == [common.STAGE_TRAINED] * 4
    assert writes == [dataset.key]
    assert len(fake.deleted) == 4 and store.list("evaluations/") == []


def test_fake_kube_dataset_upload_failure_is_internal_error(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: str, path: Any) -> Any:
        raise StoreError(f"cannot write {key}")

    monkeypatch.setattr(store, "put_file", broken)
    report, _ = executor(fake, store).run(make_task(), dataset, threading.Event())
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert report.last_stage == common.STAGE_POLICY
    assert "cannot write" in report.message
    assert fake.created == [] and fake.deleted == []
    assert store.list("evaluations/") == []
    # Not remembered as uploaded: the next run tries again.
    monkeypatch.undo()
    fake.on_create = lambda api, job: succeed_with_report(api, job["metadata"]["name"])
    report, _ = executor(fake, store).run(make_task(), dataset, threading.Event())
    assert report.last_stage == common.STAGE_TRAINED
    assert store.exists(dataset.key)


def test_fake_kube_missing_sandbox_file_is_internal_error(
    fake: FakeKubeAPI, store: S3Store, tmp_path: Path
) -> None:
    dataset = tiny_prepared(tmp_path / "gone")
    dataset.sandbox_file.unlink()
    report, _ = executor(fake, store).run(make_task(), dataset, threading.Event())
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert fake.created == []


def test_fake_kube_report_tail_wins_over_the_pod_log(
    fake: FakeKubeAPI, store: S3Store, dataset: Prepared
) -> None:
    def pod(api: FakeKubeAPI, name: str) -> None:
        api.start_pod(name)
        r = sandbox_report()
        r.output_tail = "the candidate's own tail\n"
        upload(api, name, wire.encode(r))
        api.succeed(name, log="only in the pod log\n")

    report, _ = run(fake, store, dataset, pod)
    assert report.output_tail == "the candidate's own tail\n"
    assert not any(path.endswith("/log") for _, path in fake.requests)


def test_executor_from_config_owns_and_closes_its_client(
    fake: FakeKubeAPI, store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasloop.config import Config
    from services.evaluator.kube import launcher

    closed: list[bool] = []
    client = fake.api_client()
    monkeypatch.setattr(client, "close", lambda: closed.append(True))
    monkeypatch.setattr(launcher, "kube_api_client", lambda: client)
    ex = executor_from_config(Config(), store)
    assert ex.kind == evaluator_pb2.EXECUTOR_KUBERNETES_JOB
    ex.close()
    ex.close()
    assert closed == [True]
    passed_in = fake.api_client()
    monkeypatch.setattr(passed_in, "close", lambda: closed.append(False))
    executor_from_config(Config(), store, api=passed_in).close()
    assert closed == [True]
