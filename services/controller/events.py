"""Events of the runs in this process, fanned out to watchers (WatchRun, the CLI)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from services.controller.cycle import Event

END = None  # a watcher's queue gets this when the run it watches ends


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
