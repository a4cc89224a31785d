"""A training job's spec: the request checked, with defaults filled in."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nasloop.artifacts import ADAPTER_NAME
from nasloop.lora import LoraSettings
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2
from nasloop.v1 import trainer_pb2 as pb

DEFAULT_LORA = LoraSettings.from_proto(common_pb2.LoraConfig())
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class TrainSpec:
    job_id: str
    base_model: str
    pairs_key: str
    pairs_sha256: str
    output_prefix: str
    adapter_name: str = ""  # the served name (the Job's adapter.name)
    lora: LoraSettings = DEFAULT_LORA
    lr: float = 2e-4
    epochs: int = 1
    batch_size: int = 4
    grad_accum: int = 2
    seed: int = 0
    max_seq_len: int = 0
    precision: int = pb.PRECISION_UNSPECIFIED
    parent_prefix: str = ""
    parent_sha256: str = ""
    run: str = ""
    cycle: int = 0


def from_request(req: pb.StartJobRequest, job_id: str) -> TrainSpec:
    """Check ``req`` and fill defaults; bad values raise InvalidArgument naming the field."""
    if not req.base_model:
        raise InvalidArgument("base_model is required")
    if not req.training_pairs.key:
        raise InvalidArgument("training_pairs.key is required")
    if not req.output_prefix:
        raise InvalidArgument("output_prefix is required (e.g. adapters/<run>/<cycle>)")
    if not JOB_ID.match(job_id):
        raise InvalidArgument(f"job_id {job_id!r} must be 1-128 of [A-Za-z0-9._-]")
    if req.adapter_name and not ADAPTER_NAME.fullmatch(req.adapter_name):
        raise InvalidArgument(f"adapter_name {req.adapter_name!r} must be 1-128 of [A-Za-z0-9._-]")
    try:
        lora = LoraSettings.from_proto(req.lora)
    except ValueError as e:
        raise InvalidArgument(f"lora: {e}") from None
    checks = [
        (math.isfinite(req.lora.alpha) and req.lora.alpha >= 0, "lora.alpha must be >= 0"),
        (0 <= lora.dropout < 1, "lora.dropout must be in [0, 1)"),
        (math.isfinite(req.lr) and 0 <= req.lr <= 1, "lr must be in [0, 1] (0 = default)"),
        (req.epochs <= 100, "epochs must be <= 100"),
        (req.batch_size <= 1024, "batch_size must be <= 1024"),
        (req.grad_accum <= 1024, "grad_accum must be <= 1024"),
        (req.max_seq_len <= 1 << 17, "max_seq_len must be <= 131072"),
        (req.precision in pb.Precision.values(), f"unknown precision {req.precision}"),
    ]
    for ok, why in checks:
        if not ok:
            raise InvalidArgument(why)
    return TrainSpec(
        job_id=job_id,
        base_model=req.base_model,
        pairs_key=req.training_pairs.key,
        pairs_sha256=req.training_pairs.sha256,
        output_prefix=req.output_prefix.strip("/"),
        adapter_name=req.adapter_name or adapter_name(req),
        lora=lora,
        lr=req.lr or 2e-4,
        epochs=req.epochs or 1,
        batch_size=req.batch_size or 4,
        grad_accum=req.grad_accum or 2,
        seed=req.seed,
        max_seq_len=req.max_seq_len,
        precision=req.precision,
        parent_prefix=req.parent.prefix.strip("/"),
        parent_sha256=req.parent.sha256,
        run=req.run,
        cycle=req.cycle,
    )


def adapter_name(req: pb.StartJobRequest) -> str:
    """The adapter's name when the request names none: ``<run>-c<cycle>``, or the prefix."""
    if req.run:
        return f"{req.run}-c{req.cycle}"
    return req.output_prefix.strip("/").replace("/", "-")
