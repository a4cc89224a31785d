"""Group commit: journal writes for many concurrent callers in few object-store writes.

A caller applies its op in memory (under the engine lock, so decisions stay atomic), then
``submit``s it here and, after releasing the engine lock, ``wait``s for it before it answers.
Whoever waits while no write is in flight becomes the leader for one round: it writes
everything pending, one journal write per namespace, then wakes the others; a caller whose op
is still pending leads the next round. No background thread, so an uncontended op pays no
thread hand-off, and no caller writes more than the round it joined. When a write fails, that
round's ops for the namespace are undone in memory (newest first), ``on_failure`` is told, and
their callers get the error: nothing is acknowledged that is not durable.
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
    def __init__(
        self, undo_lock: threading.RLock, on_failure: Callable[[Journal], None] | None = None
    ) -> None:
        self._undo_lock = undo_lock
        self._on_failure = on_failure
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False

    def submit(self, journal: Journal, op: dict[str, Any], undo: Callable[[], object]) -> Future:
        future: Future[None] = Future()
        with self._cond:
            self._queue.append(_Pending(journal, op, undo, future))
        return future

    def wait(self, futures: Iterable[Future]) -> None:
        """Return once each future is settled, leading a round when no one else is writing."""
        for future in futures:
            with self._cond:
                while not future.done():
                    if self._writing or not self._queue:
                        self._cond.wait()
                        continue
                    batch, self._queue, self._writing = self._queue, [], True
                    self._cond.release()
                    try:
                        self._write(batch)
                    finally:
                        self._cond.acquire()
                        self._writing = False
                        self._cond.notify_all()

    def flush(self) -> None:
        """Return once everything submitted so far is written (or has failed)."""
        with self._cond:
            pending = [p.future for p in self._queue]
        self.wait(pending)
        with self._cond:  # and a round that was in flight
            while self._writing:
                self._cond.wait()

    def _write(self, batch: list[_Pending]) -> None:
        by_journal: dict[int, list[_Pending]] = {}
        for p in batch:
            by_journal.setdefault(id(p.journal), []).append(p)
        for group in by_journal.values():
            try:
                group[0].journal.append_journal([p.op for p in group])
            except Exception as e:
                log.error("journal write failed; undoing %d ops", len(group), exc_info=True)
                try:
                    self._undo(group)
                finally:
                    for p in group:
                        p.future.set_exception(e)
            else:
                for p in group:
                    p.future.set_result(None)

    def _undo(self, group: list[_Pending]) -> None:
        with self._undo_lock:
            for p in reversed(group):
                try:
                    p.undo()
                except Exception:  # e.g. the id was added again meanwhile: nothing to restore
                    log.warning("could not undo op %s", p.op.get("seq"), exc_info=True)
        if self._on_failure is not None:
            self._on_failure(group[0].journal)
