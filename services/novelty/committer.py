"""Group commit: journal writes for many concurrent callers in few object-store writes.

A caller applies its op in memory (under the engine lock, so decisions stay atomic), then
``submit``s it here and waits on the returned future before it answers. One thread writes
everything pending, one journal object per namespace per round. When a write fails, that
round's ops for the namespace are undone in memory (newest first) and their callers get the
error: nothing is acknowledged that is not durable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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
    undo: Callable[[], None]
    future: Future[None]


class Committer:
    def __init__(self, undo_lock: threading.RLock) -> None:
        self._undo_lock = undo_lock
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="novelty-committer", daemon=True)
        self._thread.start()

    def submit(self, journal: Journal, op: dict[str, Any], undo: Callable[[], None]) -> Future:
        future: Future[None] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError("committer is closed")
            self._queue.append(_Pending(journal, op, undo, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Write everything still pending, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                batch, self._queue = self._queue, []
                if not batch and self._closing:
                    return
            self._write(batch)

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
