"""Publishing an adapter: its files first, the manifest last, so a crash leaves nothing visible."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from nasloop.artifacts import ADAPTER_FILES, AdapterMeta, BaseModel
from nasloop.store import ObjectStore
from services.trainer.sft import TrainResult
from services.trainer.spec import TrainSpec


def publish(
    store: ObjectStore,
    spec: TrainSpec,
    adapter_dir: Path,
    base: BaseModel,
    parent: AdapterMeta | None,
    data_sha256: str,
    result: TrainResult,
) -> AdapterMeta:
    """Publish the adapter in ``adapter_dir`` at ``spec.output_prefix``; the adapter as
    published, under the name the request asked for."""
    lora = parent.lora if parent is not None and parent.lora else None
    meta = AdapterMeta(
        base_model=base.ref,
        base_model_sha256=base.sha256,
        lora=lora or spec.lora,
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
    return replace(meta, name=spec.adapter_name, prefix=spec.output_prefix, sha256=sha)
