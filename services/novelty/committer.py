"""Group commit: journal writes for many concurrent callers in few object-store writes.

A caller applies its op in memory (under the engine lock, so decisions stay atomic), then
``submit``s it here and, after releasing the engine lock, ``wait``s for it before it answers.
Whoever waits while no write is in flight becomes the leader: it writes everything pending, one
journal write per namespace, and goes on with what queued up meanwhile until nothing is left;
the others sleep on their own op's future. No background thread and no broadcast wake-ups, so
an uncontended op pays no thread hand-off and a busy one few context switches. When a write
fails, that round's ops for the namespace are undone in memory (newest first) and their callers
get the error: nothing is acknowledged that is not durable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("nasloop.novelty.committer")


class Journal(Protocol):
    def append_journal(self, ops: list[dict[str, Any]]) -> None: ...


@dataclass
class _Pending:
    journal: Journal
    op: dict[str, Any]
    undo: Callable[[], object]
    future: Future[None]


class Committer:
    def __init__(self, undo_lock: threading.RLock) -> None:
        self._undo_lock = undo_lock
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False

    def submit(self, journal: Journal, op: dict[str, Any], undo: Callable[[], object]) -> Future:
        future: Future[None] = Future()
        with self._cond:
            self._queue.append(_Pending(journal, op, undo, future))
        return future

    def wait(self, futures: Iterable[Future]) -> None:
        """Return once each future is settled, leading the writes when no one else is."""
        for future in futures:
            if not future.done():
                self._lead()
                future.exception()  # settled by us, or by the leader who took it

    def flush(self) -> None:
        """Return once everything submitted so far is written (or has failed)."""
        self._lead()
        with self._cond:
            while self._writing or self._queue:
                self._cond.wait()

    def _lead(self) -> None:
        with self._cond:
            if self._writing:
                return  # the leader takes whatever is queued before it stops
            self._writing = True
        try:
            while True:
                with self._cond:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._writing = False
                        self._cond.notify_all()  # only flush() waits on this
                        return
                self._write(batch)
        except BaseException:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
            raise

    def _write(self, batch: list[_Pending]) -> None:
        by_journal: dict[int, list[_Pending]] = {}
        for p in batch:
            by_journal.setdefault(id(p.journal), []).append(p)
        for group in by_journal.values():
            try:
                group[0].journal.append_journal([p.op for p in group])
            except Exception as e:
                log.error("journal write failed; undoing %d ops", len(group), exc_info=True)
                with self._undo_lock:
                    for p in reversed(group):
                        p.undo()
                for p in group:
                    p.future.set_exception(e)
            else:
                for p in group:
                    p.future.set_result(None)
