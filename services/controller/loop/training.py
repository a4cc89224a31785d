"""The adapter's steps: fine-tune on the run's training pairs so far, publish (record the
adapter the trainer published, once its manifest says it is this cycle's), hot-load it into the
generator for the next cycle."""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import replace

import grpc

from nasloop import layout
from nasloop.artifacts import AdapterMeta, job_adapter, read_manifest
from nasloop.records import TrainingPair, dumps_lines, loads_pairs
from nasloop.store import ObjectNotFound, sha256_hex
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import trainer_pb2
from services.controller.loop import state as st
from services.controller.loop.runner import Context, CycleError, describe
from services.controller.runspec import PRECISIONS, lora_config

log = logging.getLogger("nasloop.controller")


def training_set(ctx: Context) -> list[TrainingPair]:
    """The pairs selected in cycles 1 .. this one."""
    pairs: list[TrainingPair] = []
    for cycle in range(1, ctx.cycle + 1):
        with suppress(ObjectNotFound):
            pairs += loads_pairs(ctx.store.get_bytes(layout.pairs_key(ctx.run, cycle)))
    return pairs


def fine_tune(ctx: Context, progress: st.CycleProgress) -> None:
    """Train this cycle's adapter on the training set (none yet: nothing to train)."""
    prefix = layout.adapter_prefix(ctx.run, ctx.cycle)
    if ctx.store.get_manifest(prefix) is not None:
        return  # published before a crash: never train or publish twice
    pairs = training_set(ctx)
    if not pairs:
        log.info("cycle %d: no training pairs yet; the next cycle keeps its adapter", ctx.cycle)
        return
    key = layout.training_set_key(ctx.run, ctx.cycle)
    info = ctx.store.put_bytes(key, dumps_lines(pairs))
    t = ctx.spec.training
    parent = progress.generated_with if t.continual else None
    request = trainer_pb2.StartJobRequest(
        job_id=layout.training_job_id(ctx.run, ctx.cycle),
        base_model=ctx.spec.base_model,
        training_pairs=common.ObjectRef(key=key, sha256=info.sha256, size=info.size),
        lora=lora_config(ctx.spec),
        lr=t.lr,
        epochs=t.epochs,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        seed=ctx.spec.seed + ctx.cycle,
        max_seq_len=t.max_seq_len,
        precision=PRECISIONS[t.precision],
        output_prefix=prefix,
        adapter_name=layout.adapter_name(ctx.run, ctx.cycle),
        run=ctx.run,
        cycle=ctx.cycle,
    )
    if parent is not None:
        request.parent.CopyFrom(parent.to_ref())
    trainer = ctx.services.trainer
    try:
        with ctx.calls.busy.call():
            job = trainer.start_job(request)
            with ctx.calls.stream(trainer.watch_job(job.id)) as watch:
                for p in watch:
                    ctx.emit(ctx.event("fine_tune", p.message, training=p))
            job = trainer.get_job(job.id)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.ALREADY_EXISTS and ctx.store.get_manifest(prefix):
            return  # the trainer published it while we were not looking
        ctx.calls.check_stop_now()
        raise CycleError(describe("fine-tuning", e)) from e
    if job.state != common.JOB_STATE_SUCCEEDED:
        ctx.calls.check_stop_now()
        state = common.JobState.Name(job.state)
        raise CycleError(f"training job {job.id} ended {state}: {job.error}")
    ctx.trained = job_adapter(job)
    m = job.metrics
    progress.training = {
        "pairs": len(pairs),
        "initial_loss": m.initial_loss,
        "final_loss": m.final_loss,
        "steps": m.steps,
        "tokens_per_second": m.tokens_per_second,
        "train_seconds": m.train_seconds,
    }


def publish(ctx: Context, progress: st.CycleProgress) -> None:
    """Record the adapter the trainer published: the fine-tune step's job's, or (trained before
    a crash) its manifest's; with no pairs yet, keep the old one."""
    prefix = layout.adapter_prefix(ctx.run, ctx.cycle)
    adapter = ctx.trained or published(ctx, prefix)
    if adapter is None:
        if training_set(ctx):
            raise CycleError(f"no adapter was published at {prefix}/")
        progress.adapter = progress.generated_with
        return
    progress.adapter = own_adapter(ctx, prefix, adapter)
    if not progress.training and adapter.metrics:  # trained before a crash: from the manifest
        progress.training = {k: adapter.metrics.get(k) for k in ("initial_loss", "final_loss")}


def published(ctx: Context, prefix: str) -> AdapterMeta | None:
    """The adapter at ``prefix`` as its manifest says, under the name the fine-tune step asked
    the trainer for; None if there is none."""
    try:
        manifest, sha = read_manifest(ctx.store, prefix)
    except ObjectNotFound:
        return None
    meta = AdapterMeta.from_manifest(manifest, prefix=prefix, sha256=sha)
    return replace(meta, name=layout.adapter_name(ctx.run, ctx.cycle))


def own_adapter(ctx: Context, prefix: str, meta: AdapterMeta) -> AdapterMeta:
    """``meta`` if the adapter at ``prefix`` is this cycle's training job's, from this
    cycle's training set; a manifest that says otherwise is never served or continued from
    (whoever put it there), and the cycle fails saying so."""
    job_id = layout.training_job_id(ctx.run, ctx.cycle)
    data = sha256_hex(dumps_lines(training_set(ctx)))
    found = {"run": meta.run, "cycle": meta.cycle, "job id": meta.job_id}
    wanted = {"run": ctx.run, "cycle": ctx.cycle, "job id": job_id}
    wrong = [k for k in wanted if found[k] != wanted[k]]
    if meta.data_sha256 != data:
        wrong.append("data hash")
    if wrong:
        raise CycleError(
            f"the adapter at {prefix}/ is not this cycle's: its manifest's "
            f"{', '.join(wrong)} differ ({found}, data {meta.data_sha256[:12] or '-'}; "
            f"expected {wanted}, data {data[:12]}). It is not used; remove it to train anew"
        )
    return meta


def hot_load(ctx: Context, progress: st.CycleProgress) -> None:
    """Serve this cycle's adapter for the next cycle, and free the older ones' slots."""
    adapter = progress.adapter
    if adapter is None or adapter == progress.generated_with:
        return
    generator = ctx.services.generator
    try:
        with ctx.calls.busy.call():
            generator.load_adapter(adapter.to_ref())
            for info in generator.list_adapters():  # free the slots of older cycles
                if info.ref.run == ctx.run and info.name != adapter.name:
                    generator.unload_adapter(info.name)
    except grpc.RpcError as e:
        raise CycleError(describe("hot-loading", e)) from e
