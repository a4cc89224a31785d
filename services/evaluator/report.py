"""The report a sandboxed run sends back, and its wire format.

A :class:`Report` is the evaluator's private working state of one run: what the candidate's
process says (int enums, raw test outputs), then what the trusted side adds (accuracy, the
output tail, which numbers are informative). It never leaves the evaluator: its result is
:meth:`Report.evaluation`, the verdict type the whole loop shares (``nasloop.records``).

A report is untrusted: the candidate's code ran in the same process that wrote it and could have
forged any field. The evaluator therefore trusts only what it can check: the outputs are parsed
strictly and scored against labels that never entered the sandbox; every other field is
informative and bounded.

Wire format: ``NLR1`` · 4-byte big-endian header length · JSON header · raw float32 outputs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import struct
from dataclasses import dataclass, field, fields

import numpy as np

from nasloop.records import Evaluation, Measurements
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2

MAGIC = b"NLR1"
MAX_HEADER_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 300
MAX_TAIL_CHARS = 16 * 1024
MAX_HYPERPARAMETERS = 260
# The families a network's layers are sorted into (harness.descriptors).
FAMILIES = ("activation", "attention", "conv", "dropout", "linear", "norm", "other", "pooling")


class ReportError(ValueError):
    """The bytes are not a well-formed report."""


@dataclass
class Report(Measurements):
    """One run's report. The sandbox sends the enums, timings, outputs and most measurements;
    the side that ran the sandbox adds ``output_tail``; the evaluator adds ``accuracy`` (from
    the outputs and the test labels; never sent by a sandbox) and ``informative`` (the names
    of numbers only the sandbox could measure). The descriptors (``macs``, ``depth``,
    ``layer_families``: harness.descriptors) come from the first score process and are not
    part of the reward."""

    last_stage: int = common.STAGE_UNSPECIFIED
    status: int = common.STATUS_UNSPECIFIED
    timings: list[tuple[int, float]] = field(default_factory=list)
    # Network outputs on the test inputs (N x classes), in test order; None before evaluation.
    outputs: np.ndarray | None = None

    def fail(self, status: int, message: str) -> Report:
        self.status = status
        self.message = short(message)
        return self

    def passed(self, stage: int, seconds: float) -> None:
        self.last_stage = stage
        self.timings.append((stage, round(seconds, 6)))

    def evaluation(self, executor: int, executor_ref: str = "") -> Evaluation:
        """The verdict this report gives, run by ``executor`` (``evaluator_pb2.Executor``):
        the fields both types name alike copied, the enums and timings by their names; the
        test outputs, once scored, stay behind."""
        return Evaluation(
            last_stage=common.Stage.Name(self.last_stage),
            status=common.Status.Name(self.status),
            stage_seconds={common.Stage.Name(s): t for s, t in self.timings},
            executor=evaluator_pb2.Executor.Name(executor),
            executor_ref=executor_ref,
            **{name: copy.copy(getattr(self, name)) for name in _ALIKE},
        )


# Fields a Report hands to its Evaluation as they are (the enums change from numbers to names).
_ALIKE = [f.name for f in fields(Measurements)]


def short(message: str) -> str:
    """One line, bounded: the last non-empty line of a message."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 1] + "…"


def encode(report: Report) -> bytes:
    outputs = b""
    shape: list[int] = []
    if report.outputs is not None:
        arr = np.ascontiguousarray(report.outputs, dtype=np.float32)
        shape = list(arr.shape)
        outputs = arr.tobytes()
    header = {
        "last_stage": int(report.last_stage),
        "status": int(report.status),
        "message": report.message,
        "parameter_count": int(report.parameter_count),
        "loss": float(report.loss),
        "train_seconds": float(report.train_seconds),
        "eval_seconds": float(report.eval_seconds),
        "peak_memory_bytes": int(report.peak_memory_bytes),
        "trained_samples": int(report.trained_samples),
        "optimizer_steps": int(report.optimizer_steps),
        "hyperparameters": {str(k): float(v) for k, v in report.hyperparameters.items()},
        "timings": [[int(s), float(t)] for s, t in report.timings],
        "outputs_shape": shape,
        "output_tail": report.output_tail[-MAX_TAIL_CHARS:],
        **descriptors_header(report.macs, report.depth, report.layer_families),
    }
    raw = json.dumps(header, allow_nan=True).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + outputs


def _int(v: object, lo: int, hi: int, name: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ReportError(f"bad {name}")
    return v


def _float(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):  # JSON numbers only
        raise ReportError(f"bad {name}")
    return float(v)


def _hyperparameters(v: object) -> dict[str, float]:
    if not isinstance(v, dict) or len(v) > MAX_HYPERPARAMETERS:
        raise ReportError("bad hyperparameters")
    out = {}
    for k, x in v.items():
        if not (isinstance(k, str) and k.isidentifier() and len(k) <= 64):
            raise ReportError("bad hyperparameter name")
        out[k] = _float(x, "hyperparameter")
    return out


def descriptors_header(macs: int, depth: int, families: list[str]) -> dict[str, object]:
    return {"macs": int(macs), "depth": int(depth), "layer_families": list(families)}


def _descriptors(h: dict[str, object]) -> tuple[int, int, list[str]]:
    families = h.get("layer_families", [])
    if not (
        isinstance(families, list)
        and all(f in FAMILIES for f in families)
        and len(set(families)) == len(families)
    ):
        raise ReportError("bad layer_families")
    return (
        _int(h.get("macs", 0), 0, 2**62, "macs"),
        _int(h.get("depth", 0), 0, 2**31 - 1, "depth"),
        sorted(families),
    )


def encode_descriptors(macs: int, depth: int, families: list[str]) -> bytes:
    """The payload of a score process's ``D`` frame (:mod:`services.evaluator.confine`)."""
    return json.dumps(descriptors_header(macs, depth, families)).encode()


def decode_descriptors(data: bytes) -> tuple[int, int, list[str]]:
    """(macs, depth, families) from a ``D`` frame, strictly; anything else is a ReportError."""
    if len(data) > MAX_HEADER_BYTES:
        raise ReportError("bad descriptors")
    try:
        h = json.loads(data)
    except (ValueError, RecursionError, MemoryError) as e:
        raise ReportError(f"bad descriptors: {type(e).__name__}") from None
    if not isinstance(h, dict):
        raise ReportError("bad descriptors")
    return _descriptors(h)


def decode(data: bytes, max_outputs: int = 1 << 28) -> Report:
    """Parse a report strictly; anything malformed raises :class:`ReportError`."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ReportError("not a report")
    (hlen,) = struct.unpack(">I", data[4:8])
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(data):
        raise ReportError("bad header length")
    try:
        h = json.loads(data[8 : 8 + hlen])
    except (ValueError, RecursionError, MemoryError) as e:  # a deeply nested header included
        raise ReportError(f"bad header: {type(e).__name__}") from None
    if not isinstance(h, dict):
        raise ReportError("bad header")
    stages, statuses = common.Stage.values(), common.Status.values()
    r = Report(
        last_stage=_int(h.get("last_stage"), min(stages), max(stages), "last_stage"),
        status=_int(h.get("status"), min(statuses), max(statuses), "status"),
        message=short(h.get("message", "")) if isinstance(h.get("message"), str) else "",
        parameter_count=_int(h.get("parameter_count", 0), 0, 2**62, "parameter_count"),
        loss=_float(h.get("loss", 0.0), "loss"),
        train_seconds=_float(h.get("train_seconds", 0.0), "train_seconds"),
        eval_seconds=_float(h.get("eval_seconds", 0.0), "eval_seconds"),
        peak_memory_bytes=_int(h.get("peak_memory_bytes", 0), 0, 2**62, "peak_memory_bytes"),
        trained_samples=_int(h.get("trained_samples", 0), 0, 2**62, "trained_samples"),
        optimizer_steps=_int(h.get("optimizer_steps", 0), 0, 2**62, "optimizer_steps"),
        hyperparameters=_hyperparameters(h.get("hyperparameters", {})),
    )
    with contextlib.suppress(ReportError):  # informative: a bad one is left out, never fatal
        r.macs, r.depth, r.layer_families = _descriptors(h)
    tail = h.get("output_tail", "")
    r.output_tail = tail[-MAX_TAIL_CHARS:] if isinstance(tail, str) else ""
    timings = h.get("timings", [])
    if not isinstance(timings, list) or len(timings) > 16:
        raise ReportError("bad timings")
    for t in timings:
        if not (isinstance(t, list) and len(t) == 2):
            raise ReportError("bad timings")
        r.timings.append((_int(t[0], min(stages), max(stages), "timing stage"), _float(t[1], "t")))
    shape = h.get("outputs_shape", [])
    body = data[8 + hlen :]
    if shape:
        if not (isinstance(shape, list) and len(shape) == 2):
            raise ReportError("outputs must be 2-D")
        n, k = (_int(x, 1, 1 << 24, "outputs shape") for x in shape)
        if n * k > max_outputs or len(body) != n * k * 4:
            raise ReportError("outputs size does not match their shape")
        r.outputs = np.frombuffer(body, dtype=np.float32).reshape(n, k).copy()
    elif body:
        raise ReportError("trailing bytes after the header")
    return r
