"""A warm sandbox worker: imports torch once, then forks one confined child per candidate.

Started by the evaluator's pool (inside bubblewrap in strict mode) as
``python -m services.evaluator.worker``. It speaks length-prefixed frames on stdin/stdout:

* in:  ``T`` + JSON {"task", "data", "limits"} — run one candidate; ``C`` — cancel the run;
* out: ``H`` once ready; ``R`` + an encoded report per task.

The worker itself runs no candidate code. Its stdout carries only frames; anything else it
prints goes to stderr.
"""

from __future__ import annotations

# Trusted imports, done once: children inherit them and need not read files to import them.
import collections  # noqa: F401
import copy  # noqa: F401
import cProfile  # noqa: F401  (torch imports it lazily)
import functools  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401
import shutil
import struct
import sys
import typing  # noqa: F401
from collections import OrderedDict
from pathlib import Path

import numpy  # noqa: F401
import torch
import torch._dynamo
import torch.nn.functional
import torch.optim
import torch.optim.lr_scheduler
import torch.utils.data

from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator.confine import Limits, run_confined
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness  # noqa: F401  (imported before any fork)
from services.evaluator.report import Report
from services.evaluator.task import Task

MAX_REQUEST_BYTES = 64 << 20
CACHED_DATASETS = 2


def read_frame(fd: int) -> tuple[bytes, bytes] | None:
    """One (kind, payload) frame, or None at end of input."""
    head = _read_exact(fd, 5)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head[1:])
    if n > MAX_REQUEST_BYTES:
        raise ValueError("oversized frame")
    payload = _read_exact(fd, n) if n else b""
    if payload is None:
        return None
    return head[:1], payload


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def write_frame(fd: int, kind: bytes, payload: bytes) -> None:
    data = memoryview(kind + struct.pack(">I", len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _clean_tmp() -> None:
    """Remove what the last candidate left in /tmp, so the next one starts clean."""
    for entry in Path("/tmp").iterdir():
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:
            pass


def main() -> None:
    frames_out = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the frame stream
    sys.stdout = sys.stderr
    torch.set_num_threads(1)  # no OpenMP pool in the parent of forked children
    clean_tmp = os.environ.get("NASLOOP_SANDBOX_CLEAN_TMP") == "1"
    datasets: OrderedDict[str, SandboxData] = OrderedDict()
    write_frame(frames_out, b"H", b"")
    while True:
        frame = read_frame(0)
        if frame is None:
            return
        kind, payload = frame
        if kind != b"T":
            continue  # a cancel that arrived after its run ended
        try:
            req = json.loads(payload)
            task = Task.from_json(req["task"])
            limits = Limits(**req["limits"])
            if req["data"] not in datasets:
                datasets[req["data"]] = SandboxData.load(req["data"])
                while len(datasets) > CACHED_DATASETS:
                    datasets.popitem(last=False)
            datasets.move_to_end(req["data"])
        except Exception as e:  # a bad request or unreadable data: answer, keep serving
            report = Report().fail(common.STATUS_INTERNAL_ERROR, f"sandbox worker: {e!r}")
            write_frame(frames_out, b"R", wire.encode(report))
            continue
        report = _run(task, datasets[req["data"]], limits)
        if clean_tmp:
            _clean_tmp()
        write_frame(frames_out, b"R", wire.encode(report))


def _run(task: Task, data: SandboxData, limits: Limits) -> Report:
    def on_watch() -> bool:
        frame = read_frame(0)
        if frame is None:  # the evaluator went away: stop the candidate
            return True
        return frame[0] == b"C"

    return run_confined(task, data, limits, watch_fd=0, on_watch=on_watch)


if __name__ == "__main__":
    main()
