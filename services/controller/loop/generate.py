"""The generate step: generation and evaluation overlap, one step.

The generator streams the answers; each is evaluated as it arrives (small batches, a few
Evaluate calls in flight) and its result is durable on its own (``evaluated/<index>.json``), so
a resumed step generates and evaluates only the answers without one, with the same seeds.
The cycle's prompts are planned once, before any answer (loop/plan.py), and kept in
``progress.json``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import grpc

from nasloop.records import CandidateRecord, Evaluation
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import generator_pb2
from services.controller.loop import state as st
from services.controller.loop.archive import load_archive, save_snapshot
from services.controller.loop.plan import apply_edit, plan_prompts
from services.controller.loop.runner import Busy, Context, CycleError, describe
from services.controller.runspec import evaluation_protocol, sampling_params

log = logging.getLogger("nasloop.controller")

EVAL_BATCH = 8  # candidates per Evaluate call
EVAL_CALLS = 3  # Evaluate calls in flight at once
# Statuses that are not the candidate's doing: evaluated again instead of recorded.
RETRY_STATUSES = ("STATUS_CANCELLED", "STATUS_INTERNAL_ERROR", "STATUS_EVICTED")
EVAL_ATTEMPTS = 2
GENERATE_CALLS = 8  # Generate calls in flight at once with several prompts (below the
# generator's max_concurrent_calls, 12 by default, which refuses more)

CandidateId = Callable[[Context, int], str]  # the id of answer ``index`` of the cycle


@dataclass
class _Generation:
    """One generate step, shared by its generating thread and its Evaluate calls."""

    ctx: Context
    progress: st.CycleProgress
    candidate_id: CandidateId
    counts: dict[str, int] = field(default_factory=dict)  # total, generated, evaluated
    # a candidate is counted and emitted under it, so its events go out in count order
    lock: threading.Lock = field(default_factory=threading.Lock)
    generating: Busy = field(default_factory=Busy)  # Generate streams
    evaluating: Busy = field(default_factory=Busy)  # Evaluate streams


def generate(ctx: Context, progress: st.CycleProgress, candidate_id: CandidateId) -> None:
    """Generate and evaluate the cycle's answers; answer i is sampled with seed
    ``progress.seed + i`` by the adapter ``progress.generated_with``, its id is
    ``candidate_id(ctx, i)``."""
    busy, generator = ctx.calls.busy, ctx.services.generator
    with busy.call():
        served = generator.model_info().model
    if served != ctx.spec.base_model:
        raise CycleError(
            f"the generator serves {served!r}, the run's spec asks for {ctx.spec.base_model!r}"
        )
    if progress.generated_with is not None:
        with busy.call():
            generator.load_adapter(progress.generated_with.to_ref())
    if not progress.prompt:  # the one rendering of each prompt; Generate is sent their text
        _plan(ctx, progress)
    g = _Generation(ctx, progress, candidate_id)
    try:
        _generate_all(g)
    finally:
        progress.generation_seconds += g.generating.seconds
        progress.evaluation_seconds += g.evaluating.seconds


def _plan(ctx: Context, progress: st.CycleProgress) -> None:
    """Plan the cycle's prompts (loop/plan.py) and save them before any answer."""
    archive = None
    if ctx.spec.search.strategy == "archive":
        objectives = ctx.spec.selection.objectives
        archive = load_archive(ctx.store, ctx.run, ctx.cycle, objectives=objectives)
        if archive.entries:
            save_snapshot(ctx.store, ctx.run, ctx.cycle, archive)

    def render(task: common.TaskSpec) -> str:
        with ctx.calls.busy.call():
            return ctx.services.generator.render_prompt(task).prompt

    plan_prompts(progress, ctx.spec, archive, render)
    st.save_progress(ctx.store, ctx.run, progress)


def _generate_all(g: _Generation) -> None:
    ctx = g.ctx
    done = st.load_evaluated(ctx.store, ctx.run, ctx.cycle)
    total = ctx.spec.candidates_per_cycle
    missing = [i for i in range(total) if i not in done]
    g.counts.update(total=total, generated=len(done), evaluated=len(done))
    if not missing:
        return
    pending = _generate_and_evaluate(g, missing)
    for _ in range(EVAL_ATTEMPTS - 1):
        if not pending:
            break
        log.warning("evaluating %d candidates again (evaluator-side failures)", len(pending))
        batches = [pending[i : i + EVAL_BATCH] for i in range(0, len(pending), EVAL_BATCH)]
        pending = [r for batch in batches for r in _evaluate(g, batch)]
    for r in pending:  # still failing on the evaluator's side: record what happened
        st.save_evaluated(ctx.store, r)
    have = st.load_evaluated(ctx.store, ctx.run, ctx.cycle)
    if len(have) < total:
        raise CycleError(f"the generator returned {len(have)} of {total} answers")


def _generate_and_evaluate(g: _Generation, indices: list[int]) -> list[CandidateRecord]:
    """Generate answers ``indices`` and evaluate each as it arrives; return the records
    whose evaluation failed on the evaluator's side (not durable, to be retried)."""
    answers: queue.Queue[CandidateRecord | None] = queue.Queue()
    failed: list[BaseException] = []

    def stream(call: _Call) -> None:
        for record in _answers(g, *call):
            with g.lock:
                g.counts["generated"] += 1
            answers.put(record)

    def produce() -> None:
        try:
            calls = _calls(g.progress, indices)
            if not g.progress.plan:  # one prompt: its calls one after the other
                for call in calls:
                    stream(call)
                return
            with ThreadPoolExecutor(GENERATE_CALLS, thread_name_prefix="generate") as pool:
                for f in [pool.submit(stream, call) for call in calls]:
                    f.result()
        except BaseException as e:  # handed to the evaluating thread
            failed.append(e)
        finally:
            answers.put(None)

    producer = threading.Thread(target=produce, name="generate", daemon=True)
    producer.start()
    if not g.ctx.overlap:
        producer.join()
    retry: list[CandidateRecord] = []
    with ThreadPoolExecutor(EVAL_CALLS, thread_name_prefix="evaluate") as pool:
        try:
            retry = _dispatch(g, pool, answers)
        except BaseException:
            g.ctx.calls.cancel_all()  # a failed step leaves nothing running behind it
            raise
        finally:
            producer.join()
    g.ctx.calls.check_stop_now()
    if failed:
        raise CycleError(describe("generation", failed[0])) from failed[0]
    return retry


def _dispatch(
    g: _Generation, pool: ThreadPoolExecutor, answers: queue.Queue[CandidateRecord | None]
) -> list[CandidateRecord]:
    """Send answers to the evaluator in small batches as they arrive."""
    retry: list[CandidateRecord] = []
    running: set[Future[list[CandidateRecord]]] = set()
    finished = False
    while not finished or running:
        batch: list[CandidateRecord] = []
        while not finished and len(batch) < EVAL_BATCH:
            try:
                item = answers.get(timeout=0.05 if batch or running else 0.5)
            except queue.Empty:
                if batch or running:
                    break
                continue
            if item is None:
                finished = True
            else:
                batch.append(item)
        if batch:
            running.add(pool.submit(_evaluate, g, batch))
        if running and (len(running) >= EVAL_CALLS or finished or not batch):
            done, running = wait(running, timeout=0.05, return_when=FIRST_COMPLETED)
            for f in done:
                retry += f.result()  # a failed call raises here
    return retry


_Call = tuple[str, int, int]  # (the prompt's sha256, first index, count): one Generate call


def _calls(progress: st.CycleProgress, indices: list[int]) -> list[_Call]:
    """One Generate call per prompt and contiguous range of its answers among ``indices``
    (answer i uses seed ``progress.seed + i`` whichever call produces it, so a resumed cycle
    regenerates exactly the answers it lost), in order of their first answer."""
    by_prompt: dict[str, list[int]] = {}
    for i in sorted(indices):
        sha = progress.plan[i] if progress.plan else progress.prompt_sha256
        by_prompt.setdefault(sha, []).append(i)
    calls = [(sha, *r) for sha, group in by_prompt.items() for r in _ranges(group)]
    return sorted(calls, key=lambda c: c[1])


def _answers(g: _Generation, sha: str, first: int, count: int) -> Iterator[CandidateRecord]:
    """The answers of one Generate call: prompt ``sha``, answers first .. first+count-1."""
    ctx, progress = g.ctx, g.progress
    asked = progress.prompt_of(first)  # rendered once, when the cycle began
    adapter = progress.generated_with
    sampling = sampling_params(ctx.spec, progress.seed + first)
    ids = [g.candidate_id(ctx, first + i) for i in range(count)]
    request = generator_pb2.GenerateRequest(
        raw_prompt=asked.text,
        n=count,
        sampling=sampling,
        adapter=adapter.name if adapter else "",
        run=ctx.run,
        cycle=ctx.cycle,
        ids=ids,
    )
    call = ctx.services.generator.generate(request)
    with ctx.calls.busy.call(), g.generating.call(), ctx.calls.stream(call):
        for answer in call:
            c = answer.candidate
            if c.provenance.prompt_sha256 != sha:
                raise CycleError(
                    "the generator was given another prompt than the one recorded "
                    f"({c.provenance.prompt_sha256[:12]}… ≠ {sha[:12]}…)"
                )
            if c.id != ids[answer.index]:  # a generator that ignores GenerateRequest.ids
                raise CycleError(f"the generator named {c.id!r}, not {ids[answer.index]!r}")
            record = CandidateRecord.from_generated(
                answer, first + answer.index, asked.text, _sampling_dict(sampling)
            )
            apply_edit(record, asked)
            yield record


def _evaluate(g: _Generation, batch: list[CandidateRecord]) -> list[CandidateRecord]:
    ctx = g.ctx
    protocol = evaluation_protocol(ctx.spec)
    by_id = {r.id: r for r in batch}
    retry: list[CandidateRecord] = []
    call = ctx.services.evaluator.evaluate([r.candidate() for r in batch], protocol)
    try:
        with ctx.calls.busy.call(), g.evaluating.call(), ctx.calls.stream(call):
            for result in call:
                record = by_id.pop(result.candidate_id)
                record.evaluation = Evaluation.from_proto(result)
                if record.evaluation.status in RETRY_STATUSES:
                    retry.append(record)
                    continue
                st.save_evaluated(ctx.store, record)
                with g.lock:
                    g.counts["evaluated"] += 1
                    ctx.emit(ctx.event("generate", candidate=record, counts=dict(g.counts)))
    except grpc.RpcError as e:
        ctx.calls.check_stop_now()
        raise CycleError(describe("evaluation", e)) from e
    if by_id:
        raise CycleError(f"the evaluator returned no result for {sorted(by_id)}")
    return retry


def _ranges(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Contiguous runs of sorted ``indices`` as (first, count)."""
    first, count = 0, 0
    for i in sorted(indices):
        if count and i == first + count:
            count += 1
            continue
        if count:
            yield first, count
        first, count = i, 1
    if count:
        yield first, count


def _sampling_dict(s: common.SamplingParams) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(s, preserving_proto_field_name=True)
