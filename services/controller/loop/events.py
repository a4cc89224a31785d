"""Events of the runs in this process, fanned out to observers (WatchRun, the CLI)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nasloop.records import CandidateRecord
from nasloop.v1 import trainer_pb2
from services.controller.loop.summary import CycleSummary


@dataclass
class Event:
    """Something a cycle did, for watchers (WatchRun, the CLI's progress bars)."""

    run: str
    cycle: int
    step: str
    message: str = ""
    candidate: CandidateRecord | None = None
    training: trainer_pb2.JobProgress | None = None
    summary: CycleSummary | None = None
    counts: dict[str, int] = field(default_factory=dict)  # e.g. generated/evaluated so far


END = None  # a watcher's queue gets this when the run it watches ends
Observer = Callable[[Event], None]

log = logging.getLogger("nasloop.controller")


class Observers:
    """The one place where a run's events go out.

    Events come from several threads at once (concurrent Evaluate streams, the trainer's
    watch, CycleStore writes in cluster mode); each event reaches every observer in turn, one
    event at a time, in the order the calls take the lock. So no observer needs a lock of its
    own. An observer that raises is logged and skipped for that event: a display never fails a
    step or a run."""

    def __init__(self, *observers: Observer) -> None:
        self._lock = threading.RLock()  # reentrant: an observer may emit a follow-up event
        self._observers: list[Observer] = list(observers)

    def add(self, observer: Observer) -> None:
        with self._lock:
            self._observers.append(observer)

    def __call__(self, event: Event, before: Callable[[], None] | None = None) -> None:
        """Send ``event`` to every observer; ``before`` runs first, under the same lock (state
        that the event changes is updated in the same order as the events go out)."""
        with self._lock:
            if before is not None:
                before()
            for observer in list(self._observers):
                try:
                    observer(event)
                except Exception:
                    log.exception(
                        "observer %r failed on an event of run %s (cycle %d, %s); skipped",
                        observer, event.run, event.cycle, event.step,
                    )  # fmt: skip


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, list[queue.Queue[Event | None]]] = {}

    def publish(self, event: Event) -> None:
        with self._lock:
            for q in self._watchers.get(event.run, ()):
                q.put(event)

    def end(self, run: str) -> None:
        """The run ended (or stopped): its watchers' streams end."""
        with self._lock:
            for q in self._watchers.pop(run, ()):
                q.put(END)

    def subscribe(self, run: str) -> queue.Queue[Event | None]:
        q: queue.Queue[Event | None] = queue.Queue()
        with self._lock:
            self._watchers.setdefault(run, []).append(q)
        return q

    def unsubscribe(self, run: str, q: queue.Queue[Event | None]) -> None:
        with self._lock:
            watchers = self._watchers.get(run, [])
            if q in watchers:
                watchers.remove(q)

    def drain(
        self, run: str, q: queue.Queue[Event | None], alive: threading.Event | None = None
    ) -> Iterator[Event]:
        """Events from ``q`` until the run ends (or ``alive`` is cleared: the caller left)."""
        try:
            while alive is None or alive.is_set():
                try:
                    event = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event is END:
                    return
                yield event
        finally:
            self.unsubscribe(run, q)
