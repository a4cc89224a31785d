"""One epoch, checked from outside the train process.

The trusted parent serves the training batches one per request (:mod:`services.evaluator.feed`)
and reads the train process's CPU time from the kernel at every request and when the exported
state arrives: the process-wide CPU clock of its pid (all its threads, nanoseconds; sleeping
does not count; on CUDA, where the work is on the GPU, wall-clock time instead). Nothing in
the candidate's process can change these readings.

Two budgets, both must hold; the training phase's time (first request to exported state) is
compared with each:

* the *reference* budget, per batch ``REFERENCE_SLACK`` times one *reference step* plus
  ``PER_BATCH_NS`` (the pipe, the loop, the small per-step work of a tiny network), plus
  ``REFERENCE_ALLOWANCE_S``. The reference step is timed by the parent on the first score
  process's CPU clock (:meth:`services.evaluator.harness.Scorer.reference`): after that
  process has sent its outputs, it runs ``train_setup`` and then LEMUR's training step — zero
  the gradients, forward in train mode, the network's own criterion on a batch of the
  protocol's size, backward, gradient clipping, the network's own optimizer step —
  ``REFERENCE_STEPS`` times, each between two marks the parent timestamps (the child waits for
  each acknowledgement, so no reading is late); the cheapest step counts. That process never
  holds a training input or label, so a ``learn()`` that steps on each batch several times (or
  on earlier batches again with each new one), or a ``forward()`` that replays stored batches,
  cannot repeat its work there: the reference stays one step while the training grows;
* the *pace* budget: ``SLACK`` times the network's own cheapest steady pace per batch (the 10th
  percentile of the time between consecutive requests) times the batches, plus
  ``ALLOWANCE_S``. It refuses replays made in bursts (after the stream, or between requests)
  even where the reference step is large, and is given before scoring.

Each adds the first batch's time (one-time costs) and the export's copying. What neither sees:
a network whose code tells the reference step apart from its own training (for example a
``forward()`` that burns CPU time whenever ``learn()`` has not run in its process) can make the
reference as slow as it likes, and then replay evenly; the README says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SLACK = 2.0
REFERENCE_SLACK = 2.0
REFERENCE_STEPS = 3  # the first warms up: the cheapest of the three counts
PER_BATCH_NS = 1_000_000
REFERENCE_ALLOWANCE_S = 0.01
ALLOWANCE_S = 0.05
EXPORT_NS_PER_BYTE = 5.0
QUANTILE = 0.10


def process_clock(pid: int) -> int:
    """The CPU clock id of process ``pid`` (Linux: CPUCLOCK_SCHED of the whole thread group)."""
    return ((~pid) << 3) | 2


def read_clock(pid: int, wall: bool) -> int | None:
    """Process ``pid``'s CPU time (``wall``: the monotonic clock), or None once it is gone."""
    if wall:
        return time.monotonic_ns()
    try:
        return time.clock_gettime_ns(process_clock(pid))
    except OSError:
        return None


@dataclass
class Ledger:
    """The readings of one candidate's processes, taken by their parent."""

    pid: int
    wall: bool = False  # CUDA: wall-clock readings
    requests: list[int] = field(default_factory=list)  # at each batch request
    batches: int = 0  # requests answered with a batch
    end: int | None = None  # when the exported state arrived
    marks: list[int] = field(default_factory=list)  # around each reference step

    def now(self) -> int:
        got = read_clock(self.pid, self.wall)
        if got is None:  # it has exited; the last reading stands
            return self.requests[-1] if self.requests else 0
        return got

    def request(self) -> None:
        self.requests.append(self.now())

    def finish(self) -> None:
        if self.end is None:
            self.end = self.now()

    def mark(self, pid: int) -> bool:
        """A reference step's mark from score process ``pid``; False once all are in (or the
        process is gone): the mark is not acknowledged."""
        if len(self.marks) > REFERENCE_STEPS:
            return False
        got = read_clock(pid, self.wall)
        if got is None:
            return False
        self.marks.append(got)
        return True

    def reference_ns(self) -> float:
        """One reference step: the cheapest interval between consecutive marks (0: none)."""
        return float(
            min((b - a for a, b in zip(self.marks, self.marks[1:], strict=False)), default=0)
        )

    def pace_ns(self) -> float:
        """The cheapest steady time per batch: the QUANTILE of the gaps between requests."""
        gaps = sorted(b - a for a, b in zip(self.requests, self.requests[1:], strict=False))
        if not gaps:
            return 0.0
        return float(gaps[min(len(gaps) - 1, int(QUANTILE * len(gaps)))])

    def train_ns(self) -> int:
        if not self.requests or self.end is None:
            return 0
        return self.end - self.requests[0]

    def first_ns(self) -> int:
        """The first batch's time: one-time costs (the first call of each kernel, allocations)
        land there; the process holds one batch then, so there is little to replay."""
        return self.requests[1] - self.requests[0] if len(self.requests) > 1 else 0

    def _fixed_ns(self, state_bytes: int, allowance_s: float) -> float:
        return self.first_ns() + allowance_s * 1e9 + EXPORT_NS_PER_BYTE * state_bytes

    def budget_ns(self, state_bytes: int) -> float:
        """The pace budget."""
        return SLACK * self.batches * self.pace_ns() + self._fixed_ns(state_bytes, ALLOWANCE_S)

    def reference_budget_ns(self, state_bytes: int) -> float:
        per_batch = REFERENCE_SLACK * self.reference_ns() + PER_BATCH_NS
        return self.batches * per_batch + self._fixed_ns(state_bytes, REFERENCE_ALLOWANCE_S)

    def budget_use(self, state_bytes: int) -> float:
        """The share of the pace budget the train phase used: refused above 1."""
        budget = self.budget_ns(state_bytes)
        return self.train_ns() / budget if budget > 0 else 0.0

    def reference_use(self, state_bytes: int) -> float:
        """The share of the reference budget the train phase used: refused above 1."""
        budget = self.reference_budget_ns(state_bytes)
        return self.train_ns() / budget if budget > 0 else 0.0

    def verdict(self, state_bytes: int) -> str | None:
        """Why the training went beyond one pass at the network's own pace, or None."""
        pace = f"this network's own pace of {self.pace_ns() / 1e6:.1f} ms per batch"
        return self._beyond(self.budget_ns(state_bytes), pace)

    def reference_verdict(self, state_bytes: int) -> str | None:
        """Why the training went beyond one pass of reference steps, or None."""
        if len(self.marks) <= REFERENCE_STEPS:
            return (
                f"the reference training step was not timed ({max(len(self.marks) - 1, 0)} of "
                f"{REFERENCE_STEPS} steps): its train-mode forward, loss, backward or optimizer "
                "step failed after scoring (see the output)"
            )
        pace = (
            f"{self.reference_ns() / 1e6:.1f} ms per training step of this architecture "
            "(timed after scoring)"
        )
        return self._beyond(self.reference_budget_ns(state_bytes), pace)

    def _beyond(self, budget: float, pace: str) -> str | None:
        """Why the train phase took more than ``budget`` (ns: one pass at ``pace``), or None."""
        spent = self.train_ns()
        if spent <= budget:
            return None
        what = "wall-clock" if self.wall else "CPU"
        return (
            f"training took {spent / 1e9:.2f} s of {what} time; one pass of "
            f"{self.batches} batches at {pace} allows {budget / 1e9:.2f} s"
        )
