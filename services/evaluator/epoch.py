"""One epoch, checked from outside the train process.

The trusted parent serves the training batches one per request (:mod:`services.evaluator.feed`)
and reads the train process's CPU time from the kernel at every request and when the exported
state arrives: the process-wide CPU clock of its pid (all its threads, nanoseconds; sleeping
does not count; on CUDA, where the work is on the GPU, wall-clock time instead). Nothing in
the candidate's process can change these readings.

The verdict: the training phase's time (first request to exported state) may not exceed
``SLACK`` times what one pass costs at the network's own cheapest steady pace (the 10th
percentile of the time between consecutive requests, times the number of batches), plus the
first batch's time (one-time start-up costs), a fixed ``ALLOWANCE_S`` and the export's
copying. Keeping batches and training on them again after the stream (the deep-copy and
hook-removal attacks), or in bursts between requests, shows as time the pace does not explain:
three passes are refused, two are not (docs/benchmarks.md). What it cannot see: a network that
does the same extra work with *every* batch (each batch stepped on r times at once, or one kept
batch again with each new one) looks like a network r times as expensive per step; the README
says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SLACK = 2.0
ALLOWANCE_S = 0.05
EXPORT_NS_PER_BYTE = 5.0
QUANTILE = 0.10


def process_clock(pid: int) -> int:
    """The CPU clock id of process ``pid`` (Linux: CPUCLOCK_SCHED of the whole thread group)."""
    return ((~pid) << 3) | 2


@dataclass
class Ledger:
    """The readings of one train process, taken by its parent."""

    pid: int
    wall: bool = False  # CUDA: wall-clock readings
    requests: list[int] = field(default_factory=list)  # at each batch request
    batches: int = 0  # requests answered with a batch
    end: int | None = None  # when the exported state arrived

    def now(self) -> int:
        if self.wall:
            return time.monotonic_ns()
        try:
            return time.clock_gettime_ns(process_clock(self.pid))
        except OSError:  # it has exited; the last reading stands
            return self.requests[-1] if self.requests else 0

    def request(self) -> None:
        self.requests.append(self.now())

    def finish(self) -> None:
        if self.end is None:
            self.end = self.now()

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

    def budget_ns(self, state_bytes: int) -> float:
        return (
            SLACK * self.batches * self.pace_ns()
            + self.first_ns()
            + ALLOWANCE_S * 1e9
            + EXPORT_NS_PER_BYTE * state_bytes
        )

    def budget_use(self, state_bytes: int) -> float:
        """The share of the budget the train phase used: refused above 1."""
        budget = self.budget_ns(state_bytes)
        return self.train_ns() / budget if budget > 0 else 0.0

    def verdict(self, state_bytes: int) -> str | None:
        """Why the training went beyond one pass, or None."""
        spent, budget = self.train_ns(), self.budget_ns(state_bytes)
        if spent <= budget:
            return None
        what = "wall-clock" if self.wall else "CPU"
        return (
            f"training took {spent / 1e9:.2f} s of {what} time; one pass of {self.batches} "
            f"batches at this network's own pace of {self.pace_ns() / 1e6:.1f} ms per batch "
            f"allows {budget / 1e9:.2f} s"
        )
