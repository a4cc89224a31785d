"""End to end through a FAKE Kubernetes API: the Job's container really runs, as a local process.

No cluster exists on these machines. Here the fake's "kubelet" runs the container command of the
created Job (``python -m services.evaluator.pod`` with the manifest's environment) as a local
subprocess, so the presigned URLs against moto's S3 server, pod.py, the confined sandbox and the
report upload are all exercised for real; only scheduling and the container runtime are fake.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from candidates import GOOD_NET, with_prefix
from kubecase import NUM_CLASSES, TEST, make_task, tiny_prepared
from kubefake import FakeKubeAPI

from nasloop.config import KubernetesConfig
from nasloop.store import S3Store
from nasloop.v1 import common_pb2 as common
from services.evaluator import seccomp_filter
from services.evaluator.kube.launcher import KubernetesExecutor

ROOT = Path(__file__).resolve().parents[2]

# The pod always installs the in-process seccomp filter (its image ships the bindings).
pytestmark = pytest.mark.skipif(
    not seccomp_filter.available(), reason="no seccomp bindings (pyseccomp / python3-seccomp)"
)


@pytest.fixture
def s3_store(s3_signed_store: S3Store) -> S3Store:
    """The store on the S3 server that checks presigned URLs' signatures (tests/s3auth.py)."""
    return s3_signed_store


def run_container(api: FakeKubeAPI, job: dict[str, Any]) -> None:
    """The fake kubelet: run the Job's container command locally, then record how it ended."""
    name = job["metadata"]["name"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    api.start_pod(name)
    command = list(container["command"])
    command[0] = sys.executable if command[0] == "python" else command[0]
    env = {e["name"]: e["value"] for e in container["env"]}
    # What the image would provide: the interpreter's search paths.
    for var in ("PATH", "PYTHONPATH"):
        if var in os.environ:
            env[var] = os.environ[var]
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=job["spec"]["activeDeadlineSeconds"],
        )
    except subprocess.TimeoutExpired:
        api.deadline_exceeded(name)
        return
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode == 0:
        api.succeed(name, log=log)
    else:
        api.fail(name, proc.returncode, log=log)


# The candidate looks for the pod's presigned URLs in its own memory (every writable mapping).
SCAN_FOR_URLS = with_prefix(
    "_os = torch.serialization.os\n"
    "_fd = _os.open('/proc/self/maps', _os.O_RDONLY)\n"
    "_maps = b''\n"
    "while _chunk := _os.read(_fd, 1 << 16):\n"
    "    _maps += _chunk\n"
    "_os.close(_fd)\n"
    "_mem = _os.open('/proc/self/mem', _os.O_RDONLY)\n"
    "_regions = _copies = 0\n"
    "import re\n"
    "_url = re.compile(rb'X-Amz-Signature=[0-9a-f]{64}')  # a signed URL, not this pattern\n"
    "for _line in _maps.decode().splitlines():\n"
    "    _addr, _perms = _line.split()[:2]\n"
    "    _lo, _hi = (int(_v, 16) for _v in _addr.split('-'))\n"
    "    if not _perms.startswith('rw') or _hi - _lo > 1 << 28:\n"
    "        continue\n"
    "    try:\n"
    "        _os.lseek(_mem, _lo, 0)\n"
    "        _buf = _os.read(_mem, _hi - _lo)\n"
    "    except OSError:\n"
    "        continue\n"
    "    _regions += 1\n"
    "    _copies += len(_url.findall(_buf))\n"
    "print('scanned', _regions, 'regions; url copies:', _copies)"
)


def run_in_fake_cluster(s3_store: S3Store, tmp_path: Path, code: str) -> Any:
    """One candidate through the executor, the fake API and the real pod entry point."""
    dataset = tiny_prepared(tmp_path / "data")
    cfg = KubernetesConfig(namespace="nasloop", poll_interval_s=0.05, gpus=0)
    with FakeKubeAPI() as fake:
        fake.on_create = lambda api, job: threading.Thread(
            target=run_container, args=(api, job), daemon=True
        ).start()
        executor = KubernetesExecutor(fake.api_client(), s3_store, cfg)
        report, name = executor.run(
            make_task(code=code, time_limit_s=60), dataset, threading.Event()
        )
        fake.check()
        assert fake.deleted == [("nasloop", name, "Background")]
    return report, dataset


def test_fake_kube_job_runs_the_real_pod_entrypoint(s3_store: S3Store, tmp_path: Path) -> None:
    report, dataset = run_in_fake_cluster(s3_store, tmp_path, GOOD_NET)
    assert report.status in (common.STATUS_OK, common.STATUS_UNSPECIFIED), (
        common.Status.Name(report.status),
        report.message,
        report.output_tail,
    )
    assert report.last_stage >= common.STAGE_TRAINED
    assert report.outputs is not None and report.outputs.shape == (TEST, NUM_CLASSES)
    assert report.parameter_count > 0
    assert "nasloop pod:" in report.output_tail  # the pod's log came back
    assert s3_store.list("evaluations/") == []
    assert s3_store.list("datasets/") == [dataset.key]  # uploaded by the executor, kept


def test_the_candidate_never_holds_the_presigned_urls(s3_store: S3Store, tmp_path: Path) -> None:
    report, _ = run_in_fake_cluster(s3_store, tmp_path, SCAN_FOR_URLS)
    assert report.status == common.STATUS_OK, report.message
    assert "url copies: 0" in report.output_tail, report.output_tail
    assert "scanned" in report.output_tail
