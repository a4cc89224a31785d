"""The evaluator's static stages, report wire format and protocol resolution (no sandbox)."""

from __future__ import annotations

import numpy as np
import pytest
from candidates import GOOD_NET

from nasloop.config import EvaluatorConfig
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2 as common
from services.evaluator import protocols
from services.evaluator import report as wire
from services.evaluator.policy import static_check

CFG = EvaluatorConfig()


@pytest.mark.parametrize(
    ("code", "status", "stage"),
    [
        ("", common.STATUS_NO_CODE, common.STAGE_UNSPECIFIED),
        ("   \n", common.STATUS_NO_CODE, common.STAGE_UNSPECIFIED),
        ("def f(:\n", common.STATUS_SYNTAX_ERROR, common.STAGE_EXTRACTED),
        ("x = 1\x00", common.STATUS_SYNTAX_ERROR, common.STAGE_EXTRACTED),
        ("import os\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("from subprocess import run\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("import ctypes.util\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("from . import x\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("eval('1')\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("open('/etc/passwd')\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("().__class__.__bases__\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("print(__builtins__)\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        ("import services.evaluator\n", common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED),
        (GOOD_NET, common.STATUS_OK, common.STAGE_POLICY),
    ],
)
def test_static_stages(code: str, status: int, stage: int) -> None:
    r = static_check(code, 256 * 1024)
    assert (r.status, r.last_stage) == (status, stage), r.message
    assert r.message or status == common.STATUS_OK


def test_oversized_code_is_refused() -> None:
    r = static_check("x = 1\n" * 100, 64)
    assert r.status == common.STATUS_SYNTAX_ERROR
    assert "larger than 64 bytes" in r.message


def test_forbidden_construct_message_names_the_line() -> None:
    r = static_check("x = 1\nimport socket\n", 1 << 20)
    assert r.message == "line 2: import of 'socket' is not allowed"


def test_report_round_trip() -> None:
    r = wire.Report(
        last_stage=common.STAGE_TRAINED,
        status=common.STATUS_OK,
        message="fine",
        parameter_count=123,
        loss=0.5,
        timings=[(common.STAGE_IMPORTED, 0.1)],
        outputs=np.arange(20, dtype=np.float32).reshape(2, 10),
        output_tail="hello",
    )
    back = wire.decode(wire.encode(r))
    assert back.outputs is not None and np.array_equal(back.outputs, r.outputs)
    assert (back.status, back.last_stage, back.parameter_count) == (1, 7, 123)
    assert back.timings == [(common.STAGE_IMPORTED, 0.1)]
    assert back.output_tail == "hello"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"XXXX\x00\x00\x00\x02{}",
        b"NLR1\xff\xff\xff\xff",
        wire.MAGIC + b"\x00\x00\x00\x02[]",
        wire.MAGIC + b'\x00\x00\x00\x0b{"status":1',
        wire.encode(wire.Report(status=1))[:-1] + b"}" + b"junk",
    ],
)
def test_malformed_reports_are_rejected(data: bytes) -> None:
    with pytest.raises(wire.ReportError):
        wire.decode(data)


def test_report_with_out_of_range_status_or_mismatched_outputs_is_rejected() -> None:
    good = wire.encode(wire.Report(status=1, outputs=np.zeros((3, 10), np.float32)))
    with pytest.raises(wire.ReportError):
        wire.decode(good[:-4])
    bad_status = wire.encode(wire.Report(status=999))
    with pytest.raises(wire.ReportError):
        wire.decode(bad_status)


def test_protocol_defaults_are_the_papers() -> None:
    p = protocols.resolve(common.EvaluationProtocol(), CFG)
    assert (p.name, p.epochs, p.batch_size, p.lr, p.momentum, p.failure_floor) == (
        "lemur-1epoch", 1, 16, 0.01, 0.9, 0.12,
    )  # fmt: skip
    assert p.prm() == {"lr": 0.01, "momentum": 0.9, "dropout": 0.2, "batch": 16}


def test_protocol_fields_refine_the_named_base() -> None:
    msg = common.EvaluationProtocol(name="quick", lr=0.1, momentum=0.0, seed=0, failure_floor=0)
    msg.hyperparameters["weight_decay"] = 0.5
    p = protocols.resolve(msg, CFG)
    assert (p.train_subset, p.lr, p.momentum, p.seed, p.failure_floor) == (512, 0.1, 0.0, 0, 0.0)
    assert p.prm()["weight_decay"] == 0.5


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        (common.EvaluationProtocol(name="nope"), "unknown protocol"),
        (common.EvaluationProtocol(lr=-1), "lr"),
        (common.EvaluationProtocol(momentum=2), "momentum"),
        (common.EvaluationProtocol(epochs=1000), "epochs"),
        (common.EvaluationProtocol(device="tpu"), "device"),
        (common.EvaluationProtocol(time_limit_s=10**6), "time_limit_s"),
        (common.EvaluationProtocol(hyperparameters={"x": 3.0}), "hyperparameter"),
        (common.EvaluationProtocol(hyperparameters={"not a name": 0.5}), "identifier"),
    ],
)
def test_invalid_protocols_are_refused(msg: common.EvaluationProtocol, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        protocols.resolve(msg, CFG)


def test_cuda_protocol_on_a_cpu_evaluator_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="runs on cpu"):
        protocols.resolve(common.EvaluationProtocol(device="cuda"), CFG)
