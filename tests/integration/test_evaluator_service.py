"""The evaluator service over loopback gRPC: strict sandbox, real torch, real datasets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from candidates import GOOD_NET, replace, with_prefix
from cifar_fake import write_cifar_tarball
from servers import Server

from nasloop.rpc import connect
from nasloop.store import LocalStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc

QUICK = common.EvaluationProtocol(name="quick", time_limit_s=60)
SPIN = with_prefix("while True:\n    pass")


@pytest.fixture
def stub(evaluator_server: Server):  # type: ignore[no-untyped-def]
    with connect(evaluator_server.address) as ch:
        yield pb_grpc.EvaluatorStub(ch)


def cands(*codes: str) -> list[common.Candidate]:
    return [common.Candidate(id=f"c{i}", code=c) for i, c in enumerate(codes)]


def test_list_datasets(stub) -> None:  # type: ignore[no-untyped-def]
    (digits,) = stub.ListDatasets(pb.ListDatasetsRequest()).datasets
    assert digits.name == "digits"
    assert list(digits.in_shape) == [16, 3, 32, 32] and list(digits.out_shape) == [10]
    assert (digits.train_size, digits.test_size) == (1438, 359)


def test_validate_answers_in_request_order_without_training(stub) -> None:  # type: ignore[no-untyped-def]
    wrong = replace("nn.Linear(32, out_shape[0])", "nn.Linear(32, 3)")
    reply = stub.Validate(pb.ValidateRequest(candidates=cands(GOOD_NET, "import os", wrong, "")))
    got = [(r.candidate_id, common.Status.Name(r.result.status)) for r in reply.results]
    assert got == [
        ("c0", "STATUS_OK"), ("c1", "STATUS_FORBIDDEN_CONSTRUCT"),
        ("c2", "STATUS_WRONG_OUTPUT_SHAPE"), ("c3", "STATUS_NO_CODE"),
    ]  # fmt: skip
    good = reply.results[0]
    assert good.result.last_stage == common.STAGE_FORWARD_PROBE
    assert good.result.metrics.parameter_count == 5612
    assert common.STAGE_TRAINED not in [t.stage for t in good.result.timings]
    assert reply.results[1].executor == pb.EXECUTOR_STATIC
    assert good.executor == pb.EXECUTOR_LOCAL_SANDBOX and good.executor_ref


def test_evaluate_streams_scored_results(stub) -> None:  # type: ignore[no-untyped-def]
    request = pb.EvaluateRequest(candidates=cands(GOOD_NET, "def (", GOOD_NET), protocol=QUICK)
    results = list(stub.Evaluate(request, timeout=300))
    assert sorted(r.index for r in results) == [0, 1, 2]
    assert results[0].candidate_id == "c1"  # the static failure streams first
    for r in results[1:]:
        m = r.result.metrics
        assert r.result.last_stage == common.STAGE_EVALUATED
        assert r.result.status in (common.STATUS_OK, common.STATUS_LOW_ACCURACY)
        assert 0 <= m.accuracy <= 1 and m.loss > 0 and m.train_seconds > 0
        assert [t.stage for t in r.result.timings][-1] == common.STAGE_EVALUATED
    # Same seed, same protocol: the same numbers.
    a, b = (r.result.metrics for r in results[1:])
    assert (a.accuracy, a.loss) == (b.accuracy, b.loss)


def test_paper_protocol_trains_a_good_network_above_the_floor(stub) -> None:  # type: ignore[no-untyped-def]
    request = pb.EvaluateRequest(
        candidates=cands(GOOD_NET), protocol=common.EvaluationProtocol(epochs=2, seed=1)
    )
    (r,) = list(stub.Evaluate(request, timeout=300))
    assert r.result.status == common.STATUS_OK, r.result.message
    assert r.result.metrics.accuracy > 0.3


def test_cifar10_from_the_object_store(stub, evaluator_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tarball = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=40, test=50)
    store = LocalStore(evaluator_server.log.parent / "store")  # the server's file:// store
    store.put_bytes("datasets/cifar10/test.tar.gz", tarball.read_bytes())
    protocol = common.EvaluationProtocol(
        dataset="cifar10", dataset_source="datasets/cifar10/test.tar.gz", seed=2
    )
    (r,) = list(stub.Evaluate(pb.EvaluateRequest(candidates=cands(GOOD_NET), protocol=protocol)))
    assert r.result.last_stage == common.STAGE_EVALUATED, r.result.message
    # A request may not make the evaluator read a local file.
    protocol.dataset_source = str(tarball)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Evaluate(pb.EvaluateRequest(candidates=cands(GOOD_NET), protocol=protocol)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "datasets/" in e.value.details()


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (pb.EvaluateRequest(candidates=cands(GOOD_NET),
                            protocol=common.EvaluationProtocol(dataset="imagenet")),
         "unknown dataset"),
        (pb.EvaluateRequest(candidates=cands(GOOD_NET),
                            protocol=common.EvaluationProtocol(name="paper-9000")),
         "unknown protocol"),
        (pb.EvaluateRequest(candidates=cands(GOOD_NET),
                            protocol=common.EvaluationProtocol(dataset="cifar10")),
         "cifar10 needs a source"),
        (pb.EvaluateRequest(candidates=cands(GOOD_NET),
                            protocol=common.EvaluationProtocol(batch_size=100000)),
         "batch_size"),
        (pb.EvaluateRequest(candidates=cands(GOOD_NET),
                            protocol=common.EvaluationProtocol(time_limit_s=1000)),
         "above this evaluator's limit"),
        (pb.EvaluateRequest(candidates=[]), "no candidates"),
        (pb.EvaluateRequest(candidates=cands(*["x = 1"] * 129)), "limit is 128"),
    ],
)  # fmt: skip
def test_bad_requests_are_invalid_argument(stub, request_, fragment) -> None:  # type: ignore[no-untyped-def]
    for call in (
        lambda: list(stub.Evaluate(request_, timeout=30)),
        lambda: stub.Validate(
            pb.ValidateRequest(candidates=request_.candidates, protocol=request_.protocol),
            timeout=30,
        ),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in e.value.details()


def _good_result(stub) -> pb.EvaluationResult:  # type: ignore[no-untyped-def]
    (r,) = list(stub.Evaluate(pb.EvaluateRequest(candidates=cands(GOOD_NET), protocol=QUICK)))
    return r


def test_cancelling_a_call_frees_its_workers(stub) -> None:  # type: ignore[no-untyped-def]
    call = stub.Evaluate(pb.EvaluateRequest(candidates=cands(SPIN, SPIN), protocol=QUICK))
    threading.Timer(2.0, call.cancel).start()
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.CANCELLED
    # Both workers ran a 60 s spin; cancelled, they are free for the next call at once.
    t0 = time.monotonic()
    assert _good_result(stub).result.last_stage == common.STAGE_EVALUATED
    assert time.monotonic() - t0 < 45


def test_deadline_stops_the_candidates(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Evaluate(pb.EvaluateRequest(candidates=cands(SPIN), protocol=QUICK), timeout=3))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _good_result(stub).result.last_stage == common.STAGE_EVALUATED


def test_concurrency_limit_is_resource_exhausted(stub) -> None:  # type: ignore[no-untyped-def]
    calls = [
        stub.Evaluate(pb.EvaluateRequest(candidates=cands(SPIN), protocol=QUICK))
        for _ in range(3)  # the test server's max_calls
    ]
    try:
        time.sleep(2.0)  # let the three calls start
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Evaluate(pb.EvaluateRequest(candidates=cands(GOOD_NET), protocol=QUICK)))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for c in calls:
            c.cancel()
    # A cancelled call gives its slot back once its candidates are stopped (a moment later).
    deadline = time.monotonic() + 30
    while True:
        try:
            assert _good_result(stub).result.last_stage == common.STAGE_EVALUATED
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "cancelled calls kept their slots"
            time.sleep(0.2)
