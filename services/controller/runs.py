"""Runs: start, stop, resume, watch; each run driven cycle by cycle from its durable state.

A run's spec is ``runs/<run>/spec.yaml`` and its state ``runs/<run>/state.json``; everything a
run knows survives the process. In local mode each cycle runs in this process (one thread per
run); in cluster mode each cycle is a Kubernetes Job running ``nasloop cycle``, and this process
waits for it. After the last cycle the run's baseline (loop/baseline.py) runs the
same way, unless the spec says ``baseline: false``. A controller that restarts picks up every
run that was active, re-attaching to its cycle Job (cluster mode) or resuming the cycle where
its durable state says (local mode).
"""

from __future__ import annotations

import builtins  # RunManager.list hides the type in its class
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from nasloop import layout
from nasloop.config import Config
from nasloop.layout import stop_key
from nasloop.records import CandidateRecord
from nasloop.rpc import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from nasloop.store import ObjectNotFound, ObjectStore, StoreError
from services.controller.clients import Services
from services.controller.loop import state as st
from services.controller.loop.cycle import run_cycle, steps_of
from services.controller.loop.events import Event, EventBus, Observer, Observers
from services.controller.loop.novelty import seed_corpus_namespace
from services.controller.loop.runner import CycleError, Stopped, StopSignal
from services.controller.loop.summary import CycleSummary, load_summaries, load_summary
from services.controller.runspec import RunSpec, SpecError, dump_spec, load_spec

if TYPE_CHECKING:
    from services.controller.kube import CycleJobs

log = logging.getLogger("nasloop.controller")


def checked_name(run: str) -> str:
    try:
        return layout.check_run_name(run)
    except layout.InvalidName as e:
        raise InvalidArgument(str(e)) from None


def load_run_spec(store: ObjectStore, run: str) -> RunSpec:
    try:
        text = store.get_bytes(layout.spec_key(checked_name(run))).decode()
    except ObjectNotFound:
        raise NotFound(f"no run named {run!r}") from None
    return load_spec(spec_yaml=text)


def create_run(store: ObjectStore, spec: RunSpec) -> st.RunState:
    """Store a new run's spec and its first state (nothing runs yet)."""
    if not spec.name:
        raise InvalidArgument("the run needs a name (spec.name)")
    name = checked_name(spec.name)
    if store.exists(layout.spec_key(name)):
        raise AlreadyExists(f"a run named {name!r} exists; resume it or pick another name")
    store.put_bytes(layout.spec_key(name), dump_spec(spec).encode())
    state = st.RunState(name=name)
    st.save_run_state(store, state)
    return state


@dataclass
class _Active:
    thread: threading.Thread
    stop: StopSignal


@dataclass
class _Seen:
    steps: set[str]
    candidates: set[int]


class RunManager:
    def __init__(
        self,
        cfg: Config,
        store: ObjectStore,
        services: Services | None = None,
        cycle_jobs: CycleJobs | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.services = services or Services(cfg.controller, cfg.tls)
        self.cycle_jobs = cycle_jobs  # services.controller.kube.CycleJobs in cluster mode
        self.bus = EventBus()
        # Every event of every run goes out through here (WatchRun's bus first); add more
        # observers (the CLI's progress) with ``observers.add``.
        self.observers = Observers(self.bus.publish)
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._states: dict[str, st.RunState] = {}  # live copies of active runs' states
        # Cluster mode: what each cycle Job has been seen to do (steps done, candidates
        # evaluated), so that each event is emitted once, live or at the Job's end.
        self._seen: dict[tuple[str, int], _Seen] = {}

    # -- requests ---------------------------------------------------------------------------
    def start(self, spec: RunSpec) -> st.RunState:
        with self._lock:
            if spec.name in self._active:
                raise AlreadyExists(f"a run named {spec.name!r} is running")
            state = create_run(self.store, spec)
            self._launch(state.name, spec, state)
        return state

    def resume(self, name: str) -> st.RunState:
        spec = load_run_spec(self.store, name)
        with self._lock:
            if name in self._active:
                raise FailedPrecondition(f"run {name!r} is running")
            state = self._load_state(name)
            if state.state == "succeeded":
                raise FailedPrecondition(f"run {name!r} has finished all its cycles")
            self.store.delete(stop_key(name))
            state.state, state.error = "pending", ""
            st.save_run_state(self.store, state)
            self._launch(name, spec, state)
        return state

    def stop(self, name: str, now: bool = False) -> st.RunState:
        with self._lock:
            active = self._active.get(name)
            state = self._states.get(name) or self._load_state(name)
            if active is None:
                return state  # an ended run is returned as it is
            state.state = "stopping"
            st.save_run_state(self.store, state)
            self.store.put_bytes(stop_key(name), json.dumps({"now": now}).encode())
            active.stop.set(now)
        return state

    def get(self, name: str) -> tuple[st.RunState, RunSpec, list[CycleSummary]]:
        spec = load_run_spec(self.store, name)
        state = self._states.get(name) or self._load_state(name)
        return state, spec, self.summaries(name, state)

    def list(self) -> list[st.RunState]:
        return [self._states.get(n) or self._load_state(n) for n in st.list_runs(self.store)]

    def cycle(self, name: str, cycle: int) -> CycleSummary:
        load_run_spec(self.store, name)  # NOT_FOUND for an unknown run
        try:
            summary = load_summary(self.store, name, layout.check_cycle(cycle))
        except layout.InvalidName as e:
            raise InvalidArgument(str(e)) from None
        if summary is None:
            raise NotFound(f"run {name!r} has no completed cycle {cycle}")
        return summary

    def summaries(
        self, name: str, state: st.RunState, first: int = 1
    ) -> builtins.list[CycleSummary]:
        return load_summaries(self.store, name, state.cycles_done, first)

    def baseline(self, name: str, state: st.RunState) -> CycleSummary | None:
        """The baseline's summary once it is done (``None`` before, or without one)."""
        return load_summary(self.store, name, layout.BASELINE) if state.baseline_done else None

    def watch(
        self, name: str, from_cycle: int = 0, alive: threading.Event | None = None
    ) -> Iterator[Event]:
        """Summaries of the completed cycles from ``from_cycle`` on (and the baseline's, once
        done), then live events until the run ends. The baseline's events (cycle 0) come
        whatever ``from_cycle`` is: they follow the last cycle."""
        load_run_spec(self.store, name)
        q = self.bus.subscribe(name)  # before reading the past, so nothing falls in between
        state = self._states.get(name) or self._load_state(name)
        for summary in self.summaries(name, state, max(1, from_cycle)):
            yield _summary_event(name, summary.cycle, summary)
        baseline = self.baseline(name, state)
        if baseline is not None:
            yield _summary_event(name, layout.BASELINE, baseline)
        if not self.is_active(name):
            self.bus.unsubscribe(name, q)
            return
        for event in self.bus.drain(name, q, alive):
            if event.cycle >= from_cycle or event.cycle == layout.BASELINE:
                yield event

    def observe(self, name: str, n: int, key: str, data: bytes) -> None:
        """A cycle Job (cluster mode) wrote ``key`` through the controller's CycleStore: the
        steps it finished and the candidates it evaluated become live events, as a cycle in
        this process would emit them."""
        with self._lock:
            state = self._states.get(name)
        if state is None:
            return  # not a run this controller drives
        if key == st.progress_key(name, n):
            self._emit_steps(state, name, n, st.progress_from_json(data).done)
        elif key.startswith(st.evaluated_prefix(name, n)):
            record = CandidateRecord.from_json(data.decode())
            with self._lock:
                seen = self._seen.setdefault((name, n), _Seen(set(), set()))
                if record.index in seen.candidates:
                    return
                seen.candidates.add(record.index)
                counts = {"evaluated": len(seen.candidates)}
            phase = steps_of(n).phase_of("generate")
            self._emit(state, Event(name, n, phase, candidate=record, counts=counts))

    def is_active(self, name: str) -> bool:
        with self._lock:
            return name in self._active

    def recover(self) -> builtins.list[str]:
        """Resume every run that was active when the controller stopped (restart)."""
        resumed = []
        for state in self.list():
            if state.active and not self.is_active(state.name):
                log.info("resuming run %s after a restart", state.name)
                spec = load_run_spec(self.store, state.name)
                with self._lock:
                    self._launch(state.name, spec, state)
                resumed.append(state.name)
        return resumed

    def wait(self, name: str, timeout: float | None = None) -> st.RunState:
        with self._lock:
            active = self._active.get(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while active is not None and active.thread.is_alive():
            if deadline is not None and time.monotonic() > deadline:
                break
            active.thread.join(0.5)  # short waits: Ctrl-C's handler runs in between
        return self._states.get(name) or self._load_state(name)

    def close(self, now: bool = True) -> None:
        """Stop driving runs (they stay active in the store, to be recovered by the next
        controller); in-flight calls are cancelled."""
        with self._lock:
            active = list(self._active.values())
        for a in active:
            a.stop.set(now)
        for a in active:
            a.thread.join(60)

    # -- driving a run ----------------------------------------------------------------------
    def _load_state(self, name: str) -> st.RunState:
        state = st.load_run_state(self.store, checked_name(name))
        if state is None:
            raise NotFound(f"no run named {name!r}")
        return state

    def _launch(self, name: str, spec: RunSpec, state: st.RunState) -> None:
        stop = StopSignal()
        self._states[name] = state
        thread = threading.Thread(
            target=self._drive, args=(name, spec, state, stop), name=f"run-{name}", daemon=True
        )
        self._active[name] = _Active(thread, stop)
        thread.start()

    def emitter(self, state: st.RunState) -> Observer:
        """What a cycle of the run whose live state is ``state`` emits its events to."""
        return lambda event: self._emit(state, event)

    def _emit(self, state: st.RunState, event: Event) -> None:
        def note_phase() -> None:
            if event.step != state.phase and not event.candidate and not event.training:
                state.phase = event.step

        self.observers(event, before=note_phase)

    def _drive(self, name: str, spec: RunSpec, state: st.RunState, stop: StopSignal) -> None:
        state.state = "running"
        st.save_run_state(self.store, state)
        try:
            for n in range(state.cycles_done + 1, spec.cycles + 1):
                if stop.after_step.is_set():
                    raise Stopped("stopped between cycles")
                state.cycle = n
                st.save_run_state(self.store, state)
                summary = self._run_cycle(name, n, spec, state, stop)
                state.cycles_done = n
                state.adapter = summary.adapter or state.adapter
                state.phase = "done"
                st.save_run_state(self.store, state)
            if spec.baseline and not state.baseline_done:
                if stop.after_step.is_set():
                    raise Stopped("stopped before the baseline")
                self._run_cycle(name, layout.BASELINE, spec, state, stop)
                state.baseline_done = True
                state.phase = "done"
                st.save_run_state(self.store, state)
            state.state = "succeeded"
        except Stopped as e:
            state.state, state.error = "stopped", ""
            log.info("run %s stopped: %s", name, e)
        except (CycleError, SpecError, StoreError, grpc.RpcError, RuntimeError) as e:
            state.state, state.error = "failed", _error(e)
            log.error("run %s failed in cycle %d: %s", name, state.cycle, state.error)
        except Exception as e:  # a bug: the run fails, the controller serves on
            state.state, state.error = "failed", f"internal error: {type(e).__name__}: {e}"
            log.exception("run %s failed", name)
        finally:
            try:
                st.save_run_state(self.store, state)
            finally:
                with self._lock:
                    self._active.pop(name, None)
                    self._states.pop(name, None)
                    for key in [k for k in self._seen if k[0] == name]:
                        del self._seen[key]
                self.bus.end(name)

    def _run_cycle(
        self, name: str, n: int, spec: RunSpec, state: st.RunState, stop: StopSignal
    ) -> CycleSummary:
        """Cycle ``n`` (or the baseline: ``layout.BASELINE``) in this process or as a Job."""
        if self.cfg.controller.mode == "local":
            emit = self.emitter(state)
            return run_cycle(name, n, spec, self.store, self.services, state.adapter, emit, stop)
        if self.cfg.tls.enabled:  # the corpus is read-only to cycle Jobs (nasloop/rpc/authz.py)
            seed_corpus_namespace(self.services.novelty, self.store, spec)
        return self._run_cycle_job(name, n, state, stop)

    def _run_cycle_job(
        self, name: str, n: int, state: st.RunState, stop: StopSignal
    ) -> CycleSummary:
        jobs = self.cycle_jobs
        if jobs is None:
            raise CycleError("cluster mode needs the Kubernetes API (no CycleJobs given)")
        state.cycle_job = jobs.ensure(name, n)
        st.save_run_state(self.store, state)
        outcome = jobs.wait(name, n, stop.now)
        if outcome.state == "stopped":
            # stop "now": the Job is deleted; "after the step": the Job reads stop.json itself
            jobs.delete(name, n)
            raise Stopped("stopped at once")
        self._replay_progress(name, n, state)
        if outcome.state == "succeeded":
            summary = load_summary(self.store, name, n)
            if summary is not None:
                self._emit(state, _summary_event(name, n, summary))
                return summary
            if self.store.exists(stop_key(name)):
                raise Stopped("stopped after a step")
            raise CycleError(f"cycle job {state.cycle_job} succeeded without a summary")
        jobs.delete(name, n)  # a resume creates a fresh Job
        raise CycleError(f"cycle job {state.cycle_job} {outcome.state}: {outcome.message}")

    def _replay_progress(self, name: str, n: int, state: st.RunState) -> None:
        """The steps the cycle Job finished that were not seen live, as events (it runs in
        another process)."""
        progress = st.load_progress(self.store, name, n)
        self._emit_steps(state, name, n, progress.done if progress else [])

    def _emit_steps(self, state: st.RunState, name: str, n: int, done: builtins.list[str]) -> None:
        with self._lock:
            seen = self._seen.setdefault((name, n), _Seen(set(), set()))
            new = [step for step in done if step not in seen.steps]
            seen.steps.update(new)
        for step in new:
            self._emit(state, Event(name, n, steps_of(n).phase_of(step), f"{step} done"))


def _summary_event(name: str, n: int, summary: CycleSummary) -> Event:
    """The event that cycle ``n`` (or the baseline) ends with, as its own run emits it."""
    steps = steps_of(n)
    return Event(name, n, steps.phase_of("summary"), steps.done_message, summary=summary)


def _error(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__


def stop_requested(store: ObjectStore, run: str) -> dict | None:
    try:
        return json.loads(store.get_bytes(stop_key(run)))
    except (ObjectNotFound, ValueError):
        return None


def poll_stop(store: ObjectStore, run: str, stop: StopSignal, every_s: float = 2.0) -> None:
    """For a cycle in a Job: turn the controller's stop request in the store into ``stop``."""
    while not stop.now.is_set():
        request = stop_requested(store, run)
        if request is not None:
            stop.set(bool(request.get("now")))
            if request.get("now"):
                return
        time.sleep(every_s)
