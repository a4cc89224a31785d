"""The evaluation pod's entry point (services/evaluator/pod.py), run in-process against real
presigned URLs of moto's S3 server (signatures checked: tests/s3auth.py). The sandbox itself
(confine.run_confined) is replaced by a stub here; the end-to-end test in
test_evaluator_kube_e2e.py runs the real one."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest
from kubecase import TEST, TRAIN, make_task, tiny_dataset_npz

from nasloop.store import S3Store
from nasloop.v1 import common_pb2 as common
from services.evaluator import pod as pod_entry
from services.evaluator import report as wire
from services.evaluator.report import Report

URL_VARS = ("NASLOOP_TASK_URL", "NASLOOP_DATA_URL", "NASLOOP_RESULT_URL")


@pytest.fixture
def s3_store(s3_signed_store: S3Store) -> S3Store:
    """The store on the S3 server that checks presigned URLs' signatures (tests/s3auth.py)."""
    return s3_signed_store


@pytest.fixture
def urls(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A pod's environment: task and dataset in the store, a presigned report upload."""
    s3_store.put_bytes("evaluations/j/task.json", make_task().to_json().encode())
    s3_store.put_bytes("datasets/tiny/sandbox.npz", tiny_dataset_npz())
    env = {
        "NASLOOP_TASK_URL": s3_store.presigned_get_url("evaluations/j/task.json", 60),
        "NASLOOP_DATA_URL": s3_store.presigned_get_url("datasets/tiny/sandbox.npz", 60),
        "NASLOOP_RESULT_URL": s3_store.presigned_put_url("evaluations/j/report.bin", 60),
        "NASLOOP_EVALUATOR__MEMORY_BYTES": str(1 << 30),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(pod_entry, "ATTEMPTS", 1)
    return env


@pytest.fixture(autouse=True)
def keep_pytest_dumpable(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() runs in-process here: it must not change the test process's dumpable flag."""
    monkeypatch.setattr(pod_entry, "_not_dumpable", lambda: None)


@pytest.fixture
def stub_confine(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for services.evaluator.confine and records how pod.py calls it."""
    seen: dict[str, Any] = {}
    stub = types.ModuleType("services.evaluator.confine")

    def limits_for(task: Any, cfg: Any, uid: int | None, seccomp: bool, **kw: Any) -> object:
        seen.update(limits_task=task, cfg=cfg, uid=uid, seccomp=seccomp, **kw)
        return "limits"

    def run_confined(task: Any, data: Any, limits: object) -> Report:
        seen.update(task=task, data=data, limits=limits)
        seen["env_in_sandbox"] = {k: os.environ.get(k) for k in URL_VARS}
        if seen.get("raise"):
            raise RuntimeError("sandbox machinery broke")
        r = Report(parameter_count=99, output_tail="loss 2.3\nthe candidate printed this\n")
        r.message = seen.get("message", "")
        r.passed(common.STAGE_TRAINED, 1.0)
        r.outputs = np.ones((TEST, 10), dtype=np.float32)
        return r

    stub.limits_for = limits_for  # type: ignore[attr-defined]
    stub.run_confined = run_confined  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "services.evaluator.confine", stub)
    # In process here (the real pod starts a fresh interpreter: test_evaluator_kube_e2e).
    monkeypatch.setattr(
        pod_entry,
        "run_sandbox",
        lambda task, _task_path, data, env: pod_entry.evaluate(task, data, env),
    )
    return seen


def test_pod_runs_the_task_and_uploads_the_report(
    urls: dict[str, str],
    s3_store: S3Store,
    stub_confine: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pod_entry.main() == pod_entry.EXIT_OK
    assert stub_confine["task"] == make_task()
    assert stub_confine["uid"] is None and stub_confine["seccomp"] is True
    assert stub_confine["cfg"].memory_bytes == 1 << 30  # forwarded settings reach limits_for
    data = stub_confine["data"]
    assert tuple(data.train_x.shape) == (TRAIN, 3, 32, 32)
    assert tuple(data.test_x.shape) == (TEST, 3, 32, 32)
    assert str(data.train_x.device) == "cpu"
    # The candidate's process does not inherit the URLs.
    assert stub_confine["env_in_sandbox"] == dict.fromkeys(URL_VARS)
    report = wire.decode(s3_store.get_bytes("evaluations/j/report.bin"))
    assert report.last_stage == common.STAGE_TRAINED and report.parameter_count == 99
    assert report.outputs is not None and report.outputs.shape == (TEST, 10)
    assert "the candidate printed this" in capsys.readouterr().out


def test_pod_download_failure_uploads_an_internal_error(
    urls: dict[str, str], s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NASLOOP_TASK_URL", s3_store.presigned_get_url("evaluations/none", 60))
    assert pod_entry.main() == pod_entry.EXIT_DOWNLOAD
    report = wire.decode(s3_store.get_bytes("evaluations/j/report.bin"))
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert report.last_stage == common.STAGE_POLICY
    assert "404" in report.message


def test_pod_sandbox_failure_uploads_an_internal_error(
    urls: dict[str, str], s3_store: S3Store, stub_confine: dict[str, Any]
) -> None:
    stub_confine["raise"] = True
    assert pod_entry.main() == pod_entry.EXIT_RUN
    report = wire.decode(s3_store.get_bytes("evaluations/j/report.bin"))
    assert report.status == common.STATUS_INTERNAL_ERROR
    assert "sandbox machinery broke" in report.message


def test_pod_upload_failure_exits_nonzero(
    urls: dict[str, str], stub_confine: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3server import free_port

    monkeypatch.setenv("NASLOOP_RESULT_URL", f"http://127.0.0.1:{free_port()}/nowhere")
    assert pod_entry.main() == pod_entry.EXIT_UPLOAD


def test_pod_without_urls_exits_with_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in URL_VARS:
        monkeypatch.delenv(k, raising=False)
    assert pod_entry.main() == pod_entry.EXIT_USAGE


@pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux-only")
def test_pod_process_is_not_dumpable() -> None:
    """The candidate's child (same uid) cannot read the pod process's /proc/<pid>/environ."""
    code = (
        "import ctypes\n"
        "from services.evaluator import pod\n"
        "pod._not_dumpable()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "0"


def test_pod_redacts_the_urls_from_the_message(
    urls: dict[str, str], s3_store: S3Store, stub_confine: dict[str, Any]
) -> None:
    # A candidate that found the result URL in its memory and put it into its exception text.
    stub_confine["message"] = f"ValueError: {urls['NASLOOP_RESULT_URL'].split('?', 1)[1]}"
    assert pod_entry.main() == pod_entry.EXIT_OK
    report = wire.decode(s3_store.get_bytes("evaluations/j/report.bin"))
    assert "[redacted]" in report.message and "Signature" not in report.message
