"""The baseline: a run measures its improvement instead of assuming it.

After the last cycle (unless the spec says ``baseline: false``), the cycle-0 model — the base
model, no adapter — answers the *same prompt with the same seeds* as the last cycle, and its
answers go through the same evaluation (the run's protocol, the same evaluator). Their novelty is
checked against the corpus namespace and the run's namespace with a check-only call: nothing is
added to any namespace, so the baseline changes nothing the run found. The records are final
``CandidateRecord`` lines at ``runs/<run>/baseline/candidates.jsonl`` (ids ``<run>-base-<i>``,
``cycle`` 0, ``adapter_name`` empty), with a summary of a cycle's shape beside them. Where the
last cycle had a plan (search.strategy "archive", loop/plan.py), the baseline takes that plan
from its ``progress.json``: answer i gets the prompt (and the parent) that the last cycle's answer
i got, so the base model is asked exactly what the tuned one was.

The baseline is its own list of steps (:data:`BASELINE_STEPS`) run by the cycle's runner
(loop/runner.py): the same generate step (generate+evaluate overlap, per-candidate durable
results ``baseline/evaluated/<i>.json``, resume that regenerates only the missing indices with
seed + index) with its own ids, the same novelty step with check-only verdicts, its records, the
same summary step. It is crash-safe like a cycle, and a baseline whose summary step is done is
not run again. It runs where cycles run: in the controller's process (local mode) or as a
Kubernetes Job running ``nasloop cycle --baseline`` (cluster mode).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import grpc

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.records import CandidateRecord
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import novelty_pb2
from services.controller.loop import state as st
from services.controller.loop import steps
from services.controller.loop.generate import generate
from services.controller.loop.novelty import novelty
from services.controller.loop.runner import Context, CycleError, StepList

log = logging.getLogger("nasloop.controller")

PHASE = "baseline"  # Event.step of everything the baseline does (CYCLE_PHASE_BASELINE)


@dataclass(frozen=True)
class Plan:
    """What the last cycle asked: its prompt (for every answer, unless its progress has a
    plan), answer i sampled with seed + i."""

    prompt: str
    prompt_sha256: str
    seed: int


def plan_from(
    records: Sequence[CandidateRecord], total: int, planned: st.CycleProgress | None = None
) -> Plan:
    """The last cycle's prompt and seeds, exactly as its records carry them; with ``planned``
    (the last cycle's progress, when it has a plan) each record's prompt is its planned one.

    Raises :class:`CycleError` when the records do not say one prompt (or the planned ones) and
    seeds seed + i for indices 0 .. total-1 (the baseline would not be comparable)."""
    by_index = sorted(records, key=lambda r: r.index)
    if [r.index for r in by_index] != list(range(total)):
        raise CycleError(
            f"the last cycle has {len(records)} records, not one for each of {total} candidates"
        )
    first = by_index[0]
    plan = Plan(first.prompt, first.prompt_sha256, first.seed)
    if planned is not None and planned.plan:
        plan = Plan(planned.prompt, planned.prompt_sha256, planned.seed)
    else:
        planned = None
    for r in by_index:
        asked = planned.prompt_of(r.index) if planned else st.PlannedPrompt(plan.prompt)
        sha = planned.plan[r.index] if planned else plan.prompt_sha256
        if (r.prompt, r.prompt_sha256, r.seed - r.index) != (asked.text, sha, plan.seed):
            raise CycleError(
                f"candidate {r.id} of the last cycle has another prompt or seed than "
                f"prompt {sha[:12]}… seed {plan.seed} + {r.index}"
            )
    return plan


def first_progress(ctx: Context, previous: AdapterMeta | None) -> st.CycleProgress:
    """The last cycle's prompt (or plan) and seeds, and no adapter (``previous`` is not
    used)."""
    last = ctx.spec.cycles
    records = st.load_candidates(ctx.store, ctx.run, last)
    if not records:
        raise CycleError(f"the baseline needs cycle {last}'s records; it has none yet")
    planned = st.load_progress(ctx.store, ctx.run, last)
    plan = plan_from(records, ctx.spec.candidates_per_cycle, planned)
    return st.CycleProgress(
        cycle=ctx.cycle,
        prompt=plan.prompt,
        prompt_sha256=plan.prompt_sha256,
        seed=plan.seed,
        plan=list(planned.plan) if planned is not None else [],
        prompts=dict(planned.prompts) if planned is not None else {},
        generated_with=None,  # the cycle-0 model: no adapter
    )


def candidate_id(ctx: Context, index: int) -> str:
    return layout.baseline_candidate_id(ctx.run, index)


def check_only(
    ctx: Context, own: str, consult: list[str], candidates: list[common.Candidate]
) -> list[novelty_pb2.CheckResult | None]:
    """Check-only verdicts against the run's and the corpus namespace: nothing is added.
    A novelty service without the check-only call gives no verdict (logged)."""
    try:
        return list(ctx.services.novelty.batch_check([own, *consult], candidates))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        log.warning("the novelty service has no check-only call: no baseline verdicts")
        return [None] * len(candidates)


def records(ctx: Context, progress: st.CycleProgress) -> None:
    """The final records (nothing is selected: the baseline trains nothing)."""
    steps.save_records(ctx, steps.final_records(ctx))


BASELINE_STEPS = StepList(
    steps=(
        ("generate", partial(generate, candidate_id=candidate_id)),
        ("novelty", partial(novelty, verdicts=check_only)),
        ("records", records),
        ("summary", steps.summary),
    ),
    first_progress=first_progress,
    phase=PHASE,
    done_message="baseline done",
)
