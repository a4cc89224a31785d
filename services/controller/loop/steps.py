"""The steps that write a cycle's records and summary (generate: loop/generate.py; novelty:
loop/novelty.py; fine-tune, publish, hot-load: loop/training.py)."""

from __future__ import annotations

from nasloop import layout
from nasloop.records import CandidateRecord, TrainingPair, dumps_lines
from services.controller.loop import state as st
from services.controller.loop.runner import Context
from services.controller.loop.selection import select as choose
from services.controller.loop.summary import save_summary, summarize


def select(ctx: Context, progress: st.CycleProgress) -> None:
    """Choose the training pairs among the evaluated answers; write them and the final
    records."""
    found = final_records(ctx)
    chosen = choose(found, ctx.spec.selection)
    pairs = [TrainingPair.from_record(r) for r in chosen]
    ctx.store.put_bytes(layout.pairs_key(ctx.run, ctx.cycle), dumps_lines(pairs))
    save_records(ctx, found)


def final_records(ctx: Context) -> list[CandidateRecord]:
    evaluated = st.load_evaluated(ctx.store, ctx.run, ctx.cycle)
    return [evaluated[i] for i in sorted(evaluated)]


def save_records(ctx: Context, found: list[CandidateRecord]) -> None:
    """The final records, one object (``candidates.jsonl``)."""
    ctx.store.put_bytes(layout.candidates_key(ctx.run, ctx.cycle), dumps_lines(found))


def summary(ctx: Context, progress: st.CycleProgress) -> None:
    """The cycle's summary, written and announced (the event that ends the cycle)."""
    progress.finished = st.now()
    found = st.load_candidates(ctx.store, ctx.run, ctx.cycle)
    ctx.summary = summarize(found, progress, ctx.run, ctx.spec.selection.min_accuracy)
    save_summary(ctx.store, ctx.summary)
    ctx.emit(ctx.event("summary", ctx.steps.done_message, summary=ctx.summary))
