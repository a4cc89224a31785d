"""Fingerprint worker processes.

Tokenising is pure Python: computed in the service's process it holds the GIL that the gRPC
server needs. Each worker is a process with its own pipe; a request thread borrows an idle
worker, sends it the code and blocks on the answer (releasing the GIL), then gives it back.
No manager thread sits between caller and worker, which matters for ~1 ms tasks.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from nasloop.fingerprint import TokenMode, minhash

log = logging.getLogger("nasloop.novelty.workers")


class WorkerDied(RuntimeError):
    """The worker ended mid-task (killed, out of memory); it has been replaced."""


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process
    conn: Connection


def _serve(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and SIGTERM
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        try:
            conn.send((True, minhash(*task).tobytes()))
        except ValueError as e:
            conn.send((False, str(e)))


class FingerprintPool:
    def __init__(self, workers: int) -> None:
        # spawn: never fork a process that runs gRPC threads.
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._idle.put(self._start())
        for _ in range(workers):  # wait until each has imported the fingerprint code
            self.minhash("warm = up", TokenMode.CANONICAL, 1, 16)

    @property
    def processes(self) -> list[Any]:
        with self._lock:
            return [w.process for w in self._all]

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_serve, args=(child,), name="novelty-fingerprint", daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        with self._lock:
            self._all.append(worker)
        return worker

    def minhash(self, code: str, mode: TokenMode, shingle_size: int, num_perm: int) -> np.ndarray:
        """Like :func:`fingerprint.minhash`, computed by a worker. ValueError for bad code."""
        worker = self._idle.get()
        try:
            worker.conn.send((code, mode, shingle_size, num_perm))
            ok, value = worker.conn.recv()
        except (EOFError, OSError) as e:
            worker = self._replace(worker)
            raise WorkerDied(f"fingerprint worker died: {e!r}") from e
        finally:
            self._idle.put(worker)
        if not ok:
            raise ValueError(value)
        return np.frombuffer(value, dtype=np.uint64)

    def _replace(self, dead: _Worker) -> _Worker:
        log.error("fingerprint worker %s died; starting another", dead.process.pid)
        dead.process.kill()
        dead.process.join()
        dead.conn.close()
        with self._lock:
            self._all.remove(dead)
        return self._start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
        for w in workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
