"""Live progress of a run on the terminal: one bar per step, with counts, from CycleEvents."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from nasloop.v1 import common_pb2 as common
from nasloop.v1 import controller_pb2 as pb

STEP_NAMES: dict[int, str] = {
    pb.CYCLE_PHASE_GENERATE: "generate+evaluate",
    pb.CYCLE_PHASE_NOVELTY: "novelty",
    pb.CYCLE_PHASE_SELECT: "select",
    pb.CYCLE_PHASE_FINE_TUNE: "fine-tune",
    pb.CYCLE_PHASE_PUBLISH: "publish",
    pb.CYCLE_PHASE_HOT_LOAD: "hot-load",
    pb.CYCLE_PHASE_DONE: "summary",
}
BASELINE = "baseline (base model, no adapter)"  # the baseline's events: cycle 0


class Progress:
    """Feed it ``CycleEvent`` messages; it draws tqdm bars (or plain lines when not a tty)."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.bar: Any = None
        self.key: tuple[int, int] | None = None
        self.valid = 0

    def _bar(self, cycle: int, phase: int, total: int | None, unit: str) -> Any:
        from tqdm import tqdm

        if self.key != (cycle, phase):
            self.close()
            self.key = (cycle, phase)
            self.valid = 0
            desc = f"cycle {cycle} {STEP_NAMES.get(phase, '')}"
            if phase == pb.CYCLE_PHASE_BASELINE:
                desc = BASELINE
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.out, leave=True)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.key = None

    def __call__(self, event: pb.CycleEvent) -> None:
        detail = event.WhichOneof("detail")
        if detail == "candidate":
            total = event.counts.get("total") or None
            bar = self._bar(event.cycle, event.phase, total, "cand")
            self.valid += event.candidate.result.status == common.STATUS_OK
            bar.n = event.counts.get("evaluated", bar.n + 1)
            bar.set_postfix(
                generated=event.counts.get("generated", 0), valid=self.valid, refresh=False
            )
            bar.refresh()
        elif detail == "training":
            t = event.training
            if not t.total_steps:
                return  # queued: no bar until the trainer knows how many steps
            bar = self._bar(event.cycle, event.phase, t.total_steps, "step")
            bar.n = t.step
            bar.set_postfix(loss=f"{t.loss:.3f}", refresh=False)
            bar.refresh()
        elif detail == "summary":
            self.close()
            s = event.summary
            what = BASELINE if event.phase == pb.CYCLE_PHASE_BASELINE else f"cycle {s.cycle}"
            print(
                f"{what}: {s.generated} generated, {s.valid} valid "
                f"({100 * s.valid_rate:.1f} %), mean accuracy {s.mean_accuracy:.3f}, "
                f"{s.novel} novel, {s.selected} selected, {s.seconds:.0f} s",
                file=self.out,
            )
        elif event.message.endswith("started"):
            self.close()
