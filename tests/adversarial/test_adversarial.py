"""The adversarial suite: hostile and broken candidates through the real evaluator service.

Strict sandbox (bubblewrap + seccomp + rlimits + non-root uid), real torch, real gRPC. Each
candidate must end with one of its expected statuses, leak nothing, and leave the service able
to evaluate a good network correctly with no stray process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from candidates import GOOD_NET
from servers import ROOT, Server

from adversarial import markers
from adversarial.cases import (
    CASES,
    SYSTEM_MARKER_DIR,
    SYSTEM_MARKER_FILE,
    SYSTEM_MARKER_VALUE,
)
from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc

SANDBOX_UID = 65534
# The worker's uid where it runs: root, or uid 0 of bubblewrap's user namespace (non-root mode).
WORKER_UID = 0
ROOT_MODE = os.geteuid() == 0  # else the unprivileged run of `make test` (non-root strict mode)
PROTOCOL = common.EvaluationProtocol(dataset="digits", time_limit_s=8, seed=7)


def _below(server_pid: int) -> set[int]:
    """Processes below the evaluator server (another evaluator on this machine is no concern
    of this suite's)."""
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])

    def below_server(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == server_pid:
                return True
        return False

    return {pid for pid in parent if below_server(pid)}


def _uid_processes(uid: int, server_pid: int) -> list[str]:
    found = []
    for pid in _below(server_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uids.split()[1]) == uid:
            found.append(str(pid))
    return found


def _worker_processes(server_pid: int) -> list[str]:
    """Processes below the evaluator server that run the worker's code (workers, and any child
    a worker forked that outlived its run)."""
    found = []
    for pid in _below(server_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"python") and b"services.evaluator.worker" in argv:
            found.append(f"{pid}: {b' '.join(argv).decode(errors='replace')}")
    return found


@pytest.fixture(scope="module")
def placed_markers() -> Iterator[set[str]]:
    """The markers in place while the suite runs: placed here where this uid can, or before
    (``make test-nonroot`` places them as root)."""
    written = [m for m in markers.MARKERS if markers.place(m)]
    try:
        yield {m.name for m in markers.MARKERS if m.present()}
    finally:
        for m in written:
            markers.remove(m)


@pytest.fixture(scope="module")
def suite_results(
    evaluator_server: Server, placed_markers: set[str]
) -> dict[str, pb.EvaluationResult]:
    try:
        system = SYSTEM_MARKER_DIR.parent
        if system.is_dir() and os.access(system, os.W_OK):  # as root: a file there to find
            SYSTEM_MARKER_DIR.mkdir(mode=0o755)
            SYSTEM_MARKER_FILE.write_text(SYSTEM_MARKER_VALUE)
            SYSTEM_MARKER_FILE.chmod(0o644)
        with connect(evaluator_server.address) as ch:
            stub = pb_grpc.EvaluatorStub(ch)
            request = pb.EvaluateRequest(
                candidates=[common.Candidate(id=c.name, code=c.code) for c in CASES],
                protocol=PROTOCOL,
            )
            results = {r.candidate_id: r for r in stub.Evaluate(request, timeout=600)}
    finally:
        shutil.rmtree(SYSTEM_MARKER_DIR, ignore_errors=True)
    return results


def test_suite_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_gets_its_status(case, suite_results, placed_markers) -> None:  # type: ignore[no-untyped-def]
    if case.needs and case.needs not in placed_markers:
        pytest.skip(f"marker {case.needs!r} could not be placed by this uid: nothing to find")
    r = suite_results[case.name]
    status = common.Status.Name(r.result.status)
    assert status in case.expected, (
        f"{case.name}: {status} ({r.result.message}); expected one of {sorted(case.expected)}; "
        f"output: {r.output_tail[-500:]!r}"
    )
    assert r.result.message or status == "STATUS_OK"
    assert case.message in r.result.message, r.result.message
    assert r.result.metrics.accuracy <= case.max_accuracy, "gained accuracy it did not earn"
    for secret in case.not_in_output:
        assert secret not in r.output_tail
    assert len(r.output_tail) <= 4096


def test_nothing_escaped(suite_results) -> None:  # type: ignore[no-untyped-def]
    assert not (ROOT / "pwned.npy").exists()
    assert not Path("/tmp/pwned").exists()


def test_candidate_runs_under_another_uid_than_its_worker(suite_results) -> None:  # type: ignore[no-untyped-def]
    """Root switches each child to the sandbox uid; a non-root evaluator's child becomes it in
    a user namespace of its own, whose one mapped uid is the worker's (issue 11)."""
    tail = suite_results["report_own_ids"].output_tail
    found = re.search(r"ids uid=(\d+) euid=(\d+) gid=(\d+) caps=(\w+) map=([\d ]+);", tail)
    assert found, tail
    uid, euid, gid = int(found[1]), int(found[2]), int(found[3])
    assert uid == euid == gid == SANDBOX_UID != WORKER_UID, tail
    assert int(found[4], 16) == 0, "the candidate holds capabilities"
    if not ROOT_MODE:  # no other uid exists there, the worker's included
        assert found[5].split() == [str(SANDBOX_UID), str(WORKER_UID), "1"], tail


def test_service_still_evaluates_a_good_network(evaluator_server: Server, suite_results) -> None:  # type: ignore[no-untyped-def]
    with connect(evaluator_server.address) as ch:
        stub = pb_grpc.EvaluatorStub(ch)
        request = pb.EvaluateRequest(
            candidates=[common.Candidate(id="good", code=GOOD_NET)], protocol=PROTOCOL
        )
        (r,) = list(stub.Evaluate(request, timeout=120))
    assert r.result.status == common.STATUS_OK, r.result.message
    assert r.result.last_stage == common.STAGE_EVALUATED
    assert r.result.metrics.accuracy > 0.12  # above the failure floor
    assert r.executor == pb.EXECUTOR_LOCAL_SANDBOX
    # No candidate process outlived its run.
    if ROOT_MODE:
        assert _uid_processes(SANDBOX_UID, evaluator_server.proc.pid) == []
    else:  # candidates share the kernel's uid: only the two workers run the worker's code
        deadline = time.monotonic() + 15  # a replaced worker may still be on its way out
        pid = evaluator_server.proc.pid
        while len(_worker_processes(pid)) > 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(_worker_processes(pid)) == 2, _worker_processes(pid)
