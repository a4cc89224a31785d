"""``python tests/pause_at.py POINT MARKER -- <nasloop arguments>``: run nasloop, and stop for good
at one named point of a cycle, so that a test can SIGKILL it exactly there (test_loop's crash
tests). On reaching the point it writes MARKER and sleeps; it never returns from there.

POINT is one of:
* ``after:<step>`` — the cycle saved its progress with ``<step>`` done;
* ``evaluated:<n>`` — the cycle saved its ``<n>``-th evaluated record in this process;
* ``training-started`` — the trainer accepted the cycle's fine-tuning job.

The hooks wrap the real functions (the step still ran and was saved; the job still started);
nothing else in the process changes.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any


def _stop_here(marker: Path, what: str) -> None:
    marker.write_text(what)
    while True:
        time.sleep(3600)


def _install(point: str, marker: Path) -> None:
    from services.controller.clients import TrainerClient
    from services.controller.loop import state

    kind, _, arg = point.partition(":")
    if kind == "after":
        save = state.save_progress

        @functools.wraps(save)
        def save_progress(store: Any, run: str, progress: Any) -> None:
            save(store, run, progress)
            if arg in progress.done:
                _stop_here(marker, point)

        state.save_progress = save_progress
    elif kind == "evaluated":
        save_evaluated, seen = state.save_evaluated, [0]

        @functools.wraps(save_evaluated)
        def counted(store: Any, record: Any) -> None:
            save_evaluated(store, record)
            seen[0] += 1
            if seen[0] >= int(arg):
                _stop_here(marker, point)

        state.save_evaluated = counted
    elif kind == "training-started":
        start_job = TrainerClient.start_job

        @functools.wraps(start_job)
        def started(self: Any, *args: Any, **kwargs: Any) -> Any:
            job = start_job(self, *args, **kwargs)
            _stop_here(marker, f"{point} {job.id}")
            return job

        TrainerClient.start_job = started  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown pause point {point!r}")


def main(argv: list[str]) -> int:
    point, marker, sep, *rest = argv
    if sep != "--":
        raise SystemExit(__doc__)
    _install(point, Path(marker))
    from services.cli import main as nasloop_main

    return nasloop_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
