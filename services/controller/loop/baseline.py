"""The baseline: a run measures its improvement instead of assuming it.

After the last cycle (unless the spec says ``baseline: false``), the cycle-0 model — the base
model, no adapter — answers the *same prompt with the same seeds* as the last cycle, and its
answers go through the same evaluation (the run's protocol, the same evaluator). Their novelty is
checked against the corpus namespace and the run's namespace with a check-only call: nothing is
added to any namespace, so the baseline changes nothing the run found. The records are final
``CandidateRecord`` lines at ``runs/<run>/baseline/candidates.jsonl`` (ids ``<run>-base-<i>``,
``cycle`` 0, ``adapter_name`` empty), with a summary of a cycle's shape beside them.

The baseline is a :class:`~services.controller.loop.cycle.Cycle` with its own steps
(``state.BASELINE_STEPS``): the same step loop, generate+evaluate overlap, per-candidate durable
results (``baseline/evaluated/<i>.json``) and resume that regenerates only the missing indices
with seed + index. It is crash-safe like a cycle, and a baseline whose summary step is done is
not run again. It runs where cycles run: in the controller's process (local mode) or as a
Kubernetes Job running ``nasloop cycle --baseline`` (cluster mode).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from nasloop import layout
from nasloop.records import CandidateRecord
from services.controller.loop import state as st
from services.controller.loop.cycle import Cycle, CycleError

log = logging.getLogger("nasloop.controller")

PHASE = "baseline"  # Event.step of everything the baseline does (CYCLE_PHASE_BASELINE)


@dataclass(frozen=True)
class Plan:
    """What the last cycle asked: one prompt for every answer, answer i sampled with seed + i."""

    prompt: str
    prompt_sha256: str
    seed: int


def plan_from(records: Sequence[CandidateRecord], total: int) -> Plan:
    """The last cycle's prompt and seeds, exactly as its records carry them.

    Raises :class:`CycleError` when the records do not say one prompt and seeds seed + i for
    indices 0 .. total-1 (the baseline would not be comparable)."""
    by_index = sorted(records, key=lambda r: r.index)
    if [r.index for r in by_index] != list(range(total)):
        raise CycleError(
            f"the last cycle has {len(records)} records, not one for each of {total} candidates"
        )
    first = by_index[0]
    plan = Plan(first.prompt, first.prompt_sha256, first.seed)
    for r in by_index:
        asked = (r.prompt, r.prompt_sha256, r.seed - r.index)
        if asked != (plan.prompt, plan.prompt_sha256, plan.seed):
            raise CycleError(
                f"candidate {r.id} of the last cycle has another prompt or seed than "
                f"prompt {plan.prompt_sha256[:12]}… seed {plan.seed} + {r.index}"
            )
    return plan


class Baseline(Cycle):
    """The baseline, run (or resumed) with :meth:`run_cycle`; ``cycle`` is ``layout.BASELINE``."""

    steps = st.BASELINE_STEPS
    done_message = "baseline done"

    def __init__(self, run: str, cycle: int, *args: Any, **kwargs: Any) -> None:
        if cycle != layout.BASELINE:
            raise ValueError(f"the baseline is cycle {layout.BASELINE}, not {cycle}")
        super().__init__(run, cycle, *args, **kwargs)

    def _new_progress(self, previous: st.AdapterState | None) -> st.CycleProgress:
        last = self.spec.cycles
        records = st.load_candidates(self.store, self.run, last)
        if not records:
            raise CycleError(f"the baseline needs cycle {last}'s records; it has none yet")
        plan = plan_from(records, self.spec.candidates_per_cycle)
        return st.CycleProgress(
            cycle=self.n,
            prompt=plan.prompt,
            prompt_sha256=plan.prompt_sha256,
            seed=plan.seed,
            generated_with=None,  # the cycle-0 model: no adapter
        )

    @classmethod
    def phase_of(cls, step: str) -> str:
        return PHASE

    def _candidate_id(self, index: int) -> str:
        return layout.baseline_candidate_id(self.run, index)

    def _verdicts(self, own: str, consult: list[str], items: list[tuple[str, str]]) -> list[Any]:
        """Check-only verdicts against the run's and the corpus namespace: nothing is added.
        A novelty service without the check-only call gives no verdict (logged)."""
        try:
            return self.services.novelty.batch_check([own, *consult], [c for _, c in items])
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log.warning("the novelty service has no check-only call: no baseline verdicts")
            return [None] * len(items)

    def _records(self, progress: st.CycleProgress) -> None:
        self._save_records(self._final_records())


def runner(cycle: int) -> type[Cycle]:
    """What runs "cycle" ``cycle``: the baseline for ``layout.BASELINE``, else a cycle."""
    return Baseline if cycle == layout.BASELINE else Cycle
