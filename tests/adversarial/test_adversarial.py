"""The adversarial suite: hostile and broken candidates through the real evaluator service.

Strict sandbox (bubblewrap + seccomp + rlimits + non-root uid), real torch, real gRPC. Each
candidate must end with one of its expected statuses, leak nothing, and leave the service able
to evaluate a good network correctly with no stray process behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from candidates import GOOD_NET
from servers import ROOT, Server

from adversarial.cases import CANARY_FILE, CANARY_VALUE, CASES
from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc

SANDBOX_UID = 65534
ROOT_MODE = os.geteuid() == 0  # else the unprivileged run of `make test` (non-root strict mode)
PROTOCOL = common.EvaluationProtocol(dataset="digits", time_limit_s=8, seed=7)


def _uid_processes(uid: int) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uids.split()[1]) == uid:
            found.append(pid)
    return found


def _worker_processes(server_pid: int) -> list[str]:
    """Processes below the evaluator server that run the worker's code (workers, and any child
    a worker forked that outlived its run)."""
    parent, argvs = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argvs[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])

    def below_server(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == server_pid:
                return True
        return False

    return [
        f"{pid}: {b' '.join(argv).decode(errors='replace')}"
        for pid, argv in argvs.items()
        if argv[0].endswith(b"python")
        and b"services.evaluator.worker" in argv
        and below_server(pid)
    ]


@pytest.fixture(scope="module")
def suite_results(evaluator_server: Server) -> dict[str, pb.EvaluationResult]:
    canary = ROOT / CANARY_FILE
    if os.access(ROOT, os.W_OK):  # the unprivileged run cannot write the checkout
        canary.write_text(CANARY_VALUE)
    try:
        with connect(evaluator_server.address) as ch:
            stub = pb_grpc.EvaluatorStub(ch)
            request = pb.EvaluateRequest(
                candidates=[common.Candidate(id=c.name, code=c.code) for c in CASES],
                protocol=PROTOCOL,
            )
            results = {r.candidate_id: r for r in stub.Evaluate(request, timeout=600)}
    finally:
        canary.unlink(missing_ok=True)
    return results


def test_suite_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_gets_its_status(case, suite_results) -> None:  # type: ignore[no-untyped-def]
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
        assert _uid_processes(SANDBOX_UID) == []
    else:  # candidates share this uid: only the two workers run the worker's code
        deadline = time.monotonic() + 15  # a replaced worker may still be on its way out
        pid = evaluator_server.proc.pid
        while len(_worker_processes(pid)) > 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(_worker_processes(pid)) == 2, _worker_processes(pid)
