"""The runner: runs a list of steps in order, each durable in the store before the next begins.

A cycle (loop/cycle.py) and the baseline (loop/baseline.py) are each a :class:`StepList`: named
step functions ``step(ctx, progress)``. :func:`run_steps` loads the cycle's ``progress.json``
(or starts it), skips the steps it marks done, and after each step marks it done and saves it;
so resuming is running the list again. It accounts the wall time and the time inside service
calls, emits "<step> started" and "<step> done", and stops before a step when asked to stop
after the current one, or cancels the calls in flight when asked to stop at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from nasloop.artifacts import AdapterMeta
from nasloop.records import CandidateRecord
from nasloop.store import ObjectStore
from nasloop.v1 import trainer_pb2
from services.controller.clients import Services
from services.controller.loop import state as st
from services.controller.loop.events import Event
from services.controller.loop.summary import CycleSummary
from services.controller.runspec import RunSpec


class CycleError(RuntimeError):
    """A step failed; the cycle stops there and resumes at that step."""


class Stopped(RuntimeError):
    """The run was asked to stop (after the current step, or at once)."""


@dataclass
class StopSignal:
    """``after_step``: stop when the current step is done. ``now``: abort calls in flight."""

    after_step: threading.Event = field(default_factory=threading.Event)
    now: threading.Event = field(default_factory=threading.Event)

    def set(self, now: bool = False) -> None:
        self.after_step.set()
        if now:
            self.now.set()


class Busy:
    """Wall time during which at least one service call was in flight (the rest of a cycle's
    wall time is the controller's own overhead)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.seconds = 0.0

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self.seconds += time.perf_counter() - self._since


class Calls:
    """A cycle's service calls: timed (``busy``), and the streaming ones cancelled on a stop
    "now"."""

    def __init__(self, stop: StopSignal | None = None) -> None:
        self.stop = stop or StopSignal()
        self.busy = Busy()  # any service call
        self._streams: list[Any] = []  # calls in flight, cancelled on a stop "now"
        self._lock = threading.Lock()

    @contextmanager
    def stream(self, call: Any) -> Iterator[Any]:
        """``call`` (a streaming gRPC call) is cancelled if the run stops at once meanwhile."""
        with self._lock:
            self._streams.append(call)
        if self.stop.now.is_set():
            call.cancel()
        try:
            yield call
        finally:
            with self._lock:
                self._streams.remove(call)

    def cancel_all(self) -> None:
        with self._lock:
            for call in self._streams:
                call.cancel()

    def check_stop_now(self) -> None:
        if self.stop.now.is_set():
            raise Stopped("stopped at once")

    def cancel_on_stop(self, finished: threading.Event) -> None:
        """Until ``finished``: cancel the calls in flight once the run is stopped at once."""
        while not finished.is_set():
            if self.stop.now.wait(0.2):
                self.cancel_all()
                return


Step = Callable[["Context", st.CycleProgress], None]


@dataclass(frozen=True)
class StepList:
    """What a kind of cycle runs: its named steps in order, and what a first attempt starts
    from. ``phase`` is ``Event.step`` of all its events (empty: each step's own name)."""

    steps: tuple[tuple[str, Step], ...]
    first_progress: Callable[[Context, AdapterMeta | None], st.CycleProgress]
    phase: str = ""
    done_message: str = "cycle done"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    def phase_of(self, step: str) -> str:
        """The step as watchers see it (``Event.step``)."""
        return self.phase or step


@dataclass
class Context:
    """What every step works with: which cycle of which run, the run's spec, the store, the
    services and their calls, and where events go."""

    run: str
    cycle: int
    spec: RunSpec
    store: ObjectStore
    services: Services
    steps: StepList
    emit: Callable[[Event], None] = lambda event: None  # nowhere
    calls: Calls = field(default_factory=Calls)
    overlap: bool = True  # evaluate answers while the generator streams the next ones
    summary: CycleSummary | None = None  # what the summary step wrote, once it ran
    trained: AdapterMeta | None = None  # what the fine-tune step's job published, once it ran

    def event(
        self,
        step: str,
        message: str = "",
        *,
        candidate: CandidateRecord | None = None,
        training: trainer_pb2.JobProgress | None = None,
        summary: CycleSummary | None = None,
        counts: dict[str, int] | None = None,
    ) -> Event:
        """An event of ``step``, named as watchers see it."""
        return Event(
            self.run, self.cycle, self.steps.phase_of(step), message,
            candidate=candidate, training=training, summary=summary, counts=counts or {},
        )  # fmt: skip


def run_steps(ctx: Context, previous: AdapterMeta | None) -> None:
    """Run (or resume) ``ctx.steps``; ``previous`` is the adapter a first attempt starts from."""
    store, run, calls = ctx.store, ctx.run, ctx.calls
    progress = st.load_progress(store, run, ctx.cycle)
    if progress is None:
        progress = ctx.steps.first_progress(ctx, previous)
        st.save_progress(store, run, progress)
    started, busy_before = time.perf_counter(), calls.busy.seconds
    finished = threading.Event()
    threading.Thread(target=calls.cancel_on_stop, args=(finished,), daemon=True).start()
    try:
        for name, step in ctx.steps.steps:
            if progress.is_done(name):
                continue
            if calls.stop.after_step.is_set():
                raise Stopped(f"stopped before {name}")
            ctx.emit(ctx.event(name, f"{name} started"))
            t0 = time.perf_counter()
            step(ctx, progress)
            progress.seconds[name] = progress.seconds.get(name, 0.0) + time.perf_counter() - t0
            progress.done.append(name)
            _account(progress, calls, started, busy_before)
            started, busy_before = time.perf_counter(), calls.busy.seconds
            st.save_progress(store, run, progress)
            if name != "summary":  # the summary step announces the cycle's end itself
                ctx.emit(ctx.event(name, f"{name} done"))
    except BaseException:
        _account(progress, calls, started, busy_before)
        st.save_progress(store, run, progress)
        raise
    finally:
        finished.set()


def _account(progress: st.CycleProgress, calls: Calls, started: float, busy_before: float) -> None:
    progress.wall_seconds += time.perf_counter() - started
    progress.service_seconds += calls.busy.seconds - busy_before


def describe(what: str, e: BaseException) -> str:
    """A step's failure, for its :class:`CycleError`."""
    if isinstance(e, grpc.RpcError):
        return f"{what} failed: {e.code().name}: {e.details()}"
    return f"{what} failed: {e}"
