"""Publishing an adapter: its files first, the manifest last, so a crash leaves nothing visible."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from nasloop.artifacts import ADAPTER_FILES, AdapterMeta, BaseModel, LoraSettings
from nasloop.store import ObjectStore
from nasloop.v1 import common_pb2 as common
from services.trainer.inputs import Parent
from services.trainer.sft import TrainResult
from services.trainer.spec import TrainSpec


def adapter_name(spec: TrainSpec) -> str:
    return f"{spec.run}-c{spec.cycle}" if spec.run else spec.output_prefix.replace("/", "-")


def publish(
    store: ObjectStore,
    spec: TrainSpec,
    adapter_dir: Path,
    base: BaseModel,
    parent: Parent | None,
    data_sha256: str,
    result: TrainResult,
) -> common.AdapterRef:
    lora = parent.lora if parent is not None and parent.lora else None
    lora = lora or LoraSettings(spec.r, spec.alpha, spec.dropout, tuple(spec.target_modules))
    meta = AdapterMeta(
        base_model=base.ref,
        base_model_sha256=base.sha256,
        lora=lora,
        job_id=spec.job_id,
        parent_sha256=parent.sha256 if parent else "",
        parent_prefix=parent.prefix if parent else "",
        data_sha256=data_sha256,
        data_key=spec.pairs_key,
        training={
            "lr": spec.lr,
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "grad_accum": spec.grad_accum,
            "seed": spec.seed,
        },
        metrics=asdict(result),
        run=spec.run,
        cycle=spec.cycle,
    )
    files = {f: adapter_dir / f for f in ADAPTER_FILES}
    store.put_artifact(spec.output_prefix, files, meta.to_meta())
    sha = store.manifest_sha256(spec.output_prefix) or ""
    return meta.ref(adapter_name(spec), spec.output_prefix, sha)
