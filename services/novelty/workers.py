"""Fingerprint worker processes.

Tokenising is pure Python: computed in the service's process it holds the GIL that the gRPC
server needs. Each worker is a process with its own pipe; a request thread borrows an idle
worker, sends it the code and blocks on the answer (releasing the GIL), then gives it back.
No manager thread sits between caller and worker, which matters for ~1 ms tasks.

The messages are plain bytes, not pickles: a request is a 9-byte header (token mode, shingle
size, permutations) and the code in UTF-8; an answer is the hash values and ``b"\x01"``, or the
error message and ``b"\x00"`` (a status byte at the end keeps the hash values aligned). The
caller reads an answer with one system call where it can: in the service's process every
blocking call hands the GIL to another thread and back.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import struct
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


_MODES = tuple(TokenMode)
_REQUEST = struct.Struct("!Bii")  # mode index, shingle size, permutations
_LENGTH = struct.Struct("!i")  # multiprocessing.Connection's frame header (messages < 2 GiB)
_STOP = b""


def _encode_request(code: str, mode: TokenMode, shingle_size: int, num_perm: int) -> bytes:
    try:
        header = _REQUEST.pack(_MODES.index(TokenMode(mode)), shingle_size, num_perm)
    except struct.error as e:
        raise ValueError(f"invalid fingerprint parameters: {e}") from None
    return header + code.encode("utf-8", "surrogatepass")


def _decode_request(data: bytes) -> tuple[str, TokenMode, int, int]:
    mode, shingle_size, num_perm = _REQUEST.unpack_from(data)
    code = data[_REQUEST.size :].decode("utf-8", "surrogatepass")
    return code, _MODES[mode], shingle_size, num_perm


def _serve(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and SIGTERM
    while True:
        try:
            task = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        if task == _STOP:
            return
        try:
            conn.send_bytes(minhash(*_decode_request(task)).tobytes() + b"\x01")
        except ValueError as e:
            conn.send_bytes(str(e).encode("utf-8", "backslashreplace") + b"\x00")


def _read_message(fd: int) -> bytes:
    """One message framed as ``Connection.send_bytes`` frames it; EOFError if the pipe closed."""
    data = os.read(fd, 65536)  # an answer is ~1 KB: almost always complete in one read
    while len(data) < _LENGTH.size or len(data) < _LENGTH.size + _LENGTH.unpack_from(data)[0]:
        more = os.read(fd, 65536)
        if not more:
            raise EOFError("fingerprint worker closed its pipe")
        data += more
    return data[_LENGTH.size :]


class FingerprintPool:
    def __init__(self, workers: int) -> None:
        # spawn: never fork a process that runs gRPC threads.
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
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
        request = _encode_request(code, mode, shingle_size, num_perm)
        worker = self._idle.get()
        try:
            worker.conn.send_bytes(request)
            answer = _read_message(worker.conn.fileno())
        except (EOFError, OSError) as e:
            worker = self._replace(worker)
            raise WorkerDied(f"fingerprint worker died: {e!r}") from e
        finally:
            self._idle.put(worker)
        if answer[-1:] != b"\x01":
            raise ValueError(answer[:-1].decode("utf-8", "replace"))
        return np.frombuffer(answer, dtype=np.uint64, count=len(answer) // 8)

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
                w.conn.send_bytes(_STOP)
        for w in workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
