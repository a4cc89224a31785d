"""A run's events reach its observers (the terminal progress, WatchRun streams) one at a time,
whatever thread emits them, and an observer that raises never fails the run."""

from __future__ import annotations

import io
import threading

from nasloop.config import Config
from nasloop.records import CandidateRecord, Evaluation
from nasloop.store import LocalStore
from services.controller.cli.progress import Progress
from services.controller.loop import state as st
from services.controller.loop.events import Event, Observers
from services.controller.runs import RunManager
from services.controller.server import event_to_pb

RUN = "events1"
THREADS = 6
PER_THREAD = 150


def candidate(i: int) -> CandidateRecord:
    return CandidateRecord(
        id=f"{RUN}-c1-{i:04d}", run=RUN, cycle=1, index=i, seed=i,
        evaluation=Evaluation("STAGE_EVALUATED", "STATUS_OK", accuracy=0.5),
    )  # fmt: skip


def test_candidate_events_from_many_threads_across_phase_changes_reach_progress_and_a_watcher(
    local_store: LocalStore,
) -> None:
    """Several Evaluate streams emit at once while the phase keeps changing (generate, then
    the baseline's candidates): the real Progress draws every event and a WatchRun-style
    subscriber gets each event once. Before the fan-out was serialised, Progress closed its bar
    in one thread while another drew on it (AttributeError: 'NoneType' has no attribute 'n')."""
    runs = RunManager(Config(), local_store)
    out = io.StringIO()
    progress = Progress(out)
    failures: list[BaseException] = []

    def draw(event: Event) -> None:  # the CLI's observer; what it raises is kept for the test
        try:
            progress(event_to_pb(event))
        except BaseException as e:
            failures.append(e)
            raise

    runs.observers.add(draw)
    watcher = runs.bus.subscribe(RUN)
    emit = runs.emitter(st.RunState(name=RUN))
    start = threading.Barrier(THREADS)

    def emitter(t: int) -> None:
        try:
            start.wait()
            for k in range(PER_THREAD):
                i = t * PER_THREAD + k
                # alternate the cycle so that every few events the bar is closed and reopened
                n, step = (1, "generate") if (i // 3) % 2 else (0, "baseline")
                counts = {"total": 1000, "generated": i, "evaluated": i}
                emit(Event(RUN, n, step, candidate=candidate(i), counts=counts))
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=emitter, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    progress.close()
    got = []
    while not watcher.empty():
        got.append(watcher.get_nowait())
    assert sorted(e.candidate.index for e in got) == list(range(THREADS * PER_THREAD))  # type: ignore[union-attr]
    assert "cycle 1 generate+evaluate" in out.getvalue()


def test_observers_call_one_at_a_time_and_skip_one_that_raises() -> None:
    inside = 0
    overlaps = 0
    seen: list[int] = []
    lock = threading.Lock()

    def slow(event: Event) -> None:
        nonlocal inside, overlaps
        with lock:
            inside += 1
            overlaps += inside > 1
        for _ in range(2000):
            pass
        with lock:
            inside -= 1

    def broken(event: Event) -> None:
        raise RuntimeError("a display bug")

    observers = Observers(broken, slow, lambda e: seen.append(e.cycle))
    threads = [
        threading.Thread(target=lambda: [observers(Event(RUN, c, "generate")) for c in range(200)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == 0
    assert len(seen) == 800  # the raising observer did not stop the ones after it
