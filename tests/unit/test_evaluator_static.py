"""The evaluator's static stages, report wire format and protocol resolution (no sandbox)."""

from __future__ import annotations

import ast

import numpy as np
import pytest
from candidates import GOOD_NET

from nasloop.config import EvaluatorConfig
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2 as common
from services.evaluator import literals, policy, protocols
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


# --- literal data (issue 18: data in the source is not learning) ---------------------------

LABELS = [(i * 7) % 10 for i in range(3000)]


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (f"x = 1\nTABLE = {dict(enumerate(LABELS))!r}\n", 2),  # an input-hash -> label table
        (f"\n\nLABELS = {LABELS!r}\n", 3),
        (f"LABELS = {tuple(LABELS)!r}\n", 1),
        (f"PACKED = {bytes(LABELS)!r}\n", 1),
        ("import torch\n\nBLOB = b'\\x01\\x02' * 1500\n", 3),
        ("PAD = [0.5, -1.25] * 1000\n", 1),
        ("ROWS = ((1, 2, 3),) * 1000\n", 1),
        ("A = 'abcdefgh' + 'ijklmnop' * 300\n", 1),
        ("def f():\n    return {'k': ['x' * 50] * 50}\n", 2),
        ("HUGE = b'x' * 10**12\n", 1),  # measured, never built
        ("HUGE = 2 ** 10**6\n", 1),
        ("BIG = 7 ** 100000 + 1\n", 1),
        ('"""' + "label table " * 200 + '"""\n', 1),  # docstrings are data a net can read
    ],
)
def test_literal_data_over_the_limit_is_refused_naming_the_line(code: str, line: int) -> None:
    r = static_check(code, 1 << 20)
    assert (r.status, r.last_stage) == (common.STATUS_FORBIDDEN_CONSTRUCT, common.STAGE_PARSED)
    assert r.message.startswith(f"line {line}: "), r.message
    assert "literal data" in r.message and str(policy.MAX_LITERAL_BYTES) in r.message


def test_literal_data_is_counted_across_the_whole_source() -> None:
    rows = "\n".join(f"T{i} = {LABELS[:60]!r}" for i in range(40))  # 40 small tables
    r = static_check(rows, 1 << 20)
    assert r.status == common.STATUS_FORBIDDEN_CONSTRUCT, r.message


def test_model_code_literals_are_far_below_the_limit() -> None:
    code = GOOD_NET + "\nCFG = [(64, 3, 1), (128, 3, 2), (256, 3, 2)] * 4\nEPS = 1e-05\n"
    assert static_check(code, 1 << 20).status == common.STATUS_OK
    tree = ast.parse(code)
    assert literals.measure(tree).total < policy.MAX_LITERAL_BYTES // 8


@pytest.mark.parametrize(
    ("expr", "size"),
    [
        ("3", 1),
        ("-0.001", 5),
        ("'héllo'", 6),
        ("b'ab' * 3", 6),
        ("3 * [1, 22]", 9),
        ("{'a': 10, 'bb': (1.5, None)}", 8),
        ("'ab' + 'cd'", 4),
        ("2 ** 10", 4),
        ("[x] * 1000", 4),  # not foldable: only its literal parts (1000)
    ],
)
def test_literal_sizes(expr: str, size: int) -> None:
    assert literals.measure(ast.parse(expr)).total == size
