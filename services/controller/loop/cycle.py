"""One cycle of the loop: generate → evaluate → novelty → select → fine-tune → publish →
hot-load → summary, each step durable in the store before the next begins (loop/runner.py).

Resuming is running the cycle again: steps marked done in ``progress.json`` are skipped, and the
generate step evaluates only the candidates without a durable result. Every call a step makes
is idempotent by a deterministic id (candidate ids, the trainer's job id, the adapter's name and
prefix), so a step repeated after a crash adds nothing twice. The same code runs in the
controller's process (local mode) and in a Kubernetes Job (``nasloop cycle``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.store import ObjectStore
from services.controller.clients import Services
from services.controller.loop import state as st
from services.controller.loop import steps, training
from services.controller.loop.baseline import BASELINE_STEPS
from services.controller.loop.events import Event
from services.controller.loop.generate import generate
from services.controller.loop.novelty import check_and_add, novelty
from services.controller.loop.runner import (
    Calls,
    Context,
    CycleError,
    StepList,
    StopSignal,
    run_steps,
)
from services.controller.loop.summary import CycleSummary, load_summary
from services.controller.runspec import RunSpec

CANDIDATE_BITS = 20  # room for answer indices above a cycle's first seed (≥ 4096 candidates)


def cycle_seed(run_seed: int, cycle: int) -> int:
    """The sampling seed of answer 0 of ``cycle`` (answer i uses it + i): a hash of the run's
    seed and the cycle, so runs with different seeds share no answer. (A plain ``seed + n·10⁶``
    made seeds 0 and 1 share 47 of 48 answers per cycle.) Below 2**63, the generator's limit."""
    digest = hashlib.sha256(f"nasloop-sampling:{run_seed}:{cycle}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (CANDIDATE_BITS + 1) << CANDIDATE_BITS


def first_progress(ctx: Context, previous: AdapterMeta | None) -> st.CycleProgress:
    """A first attempt's progress: generate with ``previous``, answer i with seed
    ``progress.seed + i``."""
    seed = cycle_seed(ctx.spec.seed, ctx.cycle)
    return st.CycleProgress(cycle=ctx.cycle, generated_with=previous, seed=seed)


def candidate_id(ctx: Context, index: int) -> str:
    return layout.candidate_id(ctx.run, ctx.cycle, index)


CYCLE_STEPS = StepList(
    steps=(
        ("generate", partial(generate, candidate_id=candidate_id)),
        ("novelty", partial(novelty, verdicts=check_and_add)),
        ("select", steps.select),
        ("fine_tune", training.fine_tune),
        ("publish", training.publish),
        ("hot_load", training.hot_load),
        ("summary", steps.summary),
    ),
    first_progress=first_progress,
)


def steps_of(cycle: int) -> StepList:
    """What runs "cycle" ``cycle``: the baseline's steps for ``layout.BASELINE``, else a
    cycle's."""
    return BASELINE_STEPS if cycle == layout.BASELINE else CYCLE_STEPS


def run_cycle(
    run: str,
    cycle: int,
    spec: RunSpec,
    store: ObjectStore,
    services: Services,
    previous: AdapterMeta | None,
    emit: Callable[[Event], None] = lambda event: None,
    stop: StopSignal | None = None,
    overlap: bool = True,
) -> CycleSummary:
    """Run (or resume) cycle ``cycle`` of ``run``, or its baseline (``layout.BASELINE``);
    ``previous`` is the adapter a cycle generates with. Returns its summary."""
    ctx = Context(run, cycle, spec, store, services, steps_of(cycle), emit, Calls(stop), overlap)
    run_steps(ctx, previous)
    summary = ctx.summary or load_summary(store, run, cycle)  # done before: written then
    if summary is None:
        raise CycleError(f"cycle {cycle} ended without a summary")
    return summary
