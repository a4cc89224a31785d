"""A warm sandbox worker: imports torch once, then forks the confined children of each candidate
(one train process, then a score process per chunk of test inputs: services.evaluator.confine).

Started by the evaluator's pool (inside bubblewrap in strict mode) as
``python -m services.evaluator.worker``. It speaks length-prefixed frames on stdin/stdout:

* in:  ``T`` + JSON {"seq", "task", "data", "limits"} — run one candidate; ``C`` — cancel;
* out: ``H`` once ready; ``R`` + the task's ``seq`` (8 bytes, big-endian) + an encoded report.

The worker itself runs no candidate code. Its stdout carries only frames; anything else it
prints goes to stderr. It is not dumpable: a child whose uid is the same in the kernel's eyes
(non-root mode, where the child is uid 65534 only in a user namespace of its own) cannot open
its /proc entries (its pipes, its memory) to forge an answer.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator.confine import (
    CAP_SETFCAP,
    Limits,
    drop_capabilities,
    empty_dir,
    not_dumpable,
    run_confined,
)
from services.evaluator.datasets import SandboxData
from services.evaluator.frames import read_frame, write_frame
from services.evaluator.preload import preload
from services.evaluator.private import private_data, scrub_freed_memory
from services.evaluator.report import Report
from services.evaluator.task import Task

MS_NOSUID, MS_NODEV, MS_REMOUNT = 2, 4, 32
CACHED_DATASETS = 2


def answer(fd: int, seq: int, report: Report) -> None:
    write_frame(fd, b"R", seq.to_bytes(8, "big") + wire.encode(report))


def _limit_tmp_inodes(inodes: int) -> None:
    """Remount the private /tmp with an inode limit: its size limit alone does not stop a
    candidate from filling kernel memory with millions of empty files."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize
    opts = f"size={size},nr_inodes={inodes},mode=1777".encode()
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot limit /tmp to {inodes} inodes: {os.strerror(err)}")


def main() -> None:
    preload()  # once, before any fork: children inherit the modules
    not_dumpable()
    frames_out = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the frame stream
    sys.stdout = sys.stderr
    torch.set_num_threads(1)  # no OpenMP pool in the parent of forked children
    scrub_freed_memory()  # no freed copy of a batch or of the data file in a child's heap
    # Only inside bubblewrap, where /tmp is this worker's own tmpfs.
    clean_tmp = os.environ.get("NASLOOP_SANDBOX_CLEAN_TMP") == "1"
    if clean_tmp and os.environ.get("NASLOOP_SANDBOX_TMP_INODES"):
        _limit_tmp_inodes(int(os.environ["NASLOOP_SANDBOX_TMP_INODES"]))
    if os.environ.get("NASLOOP_SANDBOX_DROP_CAPS") == "1":
        # All but CAP_SETFCAP, which each child needs to map its user namespace's uid to this
        # worker's uid 0 (confine.enter_user_namespace) and gives up right after.
        drop_capabilities(keep=(CAP_SETFCAP,))
    keep = set(os.listdir("/tmp")) if clean_tmp else set()
    datasets: OrderedDict[str, SandboxData] = OrderedDict()
    write_frame(frames_out, b"H", b"")
    while True:
        frame = read_frame(0)
        if frame is None:
            return
        kind, payload = frame
        if kind != b"T":
            continue  # a cancel that arrived after its run ended
        seq = 0
        try:
            req = json.loads(payload)
            seq = int(req["seq"])
            task = Task.from_json(req["task"])
            limits = Limits(**req["limits"])
            if req["data"] not in datasets:
                # Kept where no forked child sees it (services.evaluator.private).
                datasets[req["data"]] = private_data(SandboxData.load(req["data"]))
                while len(datasets) > CACHED_DATASETS:
                    datasets.popitem(last=False)
            datasets.move_to_end(req["data"])
        except Exception as e:  # a bad request or unreadable data: answer, keep serving
            report = Report().fail(common.STATUS_INTERNAL_ERROR, f"sandbox worker: {e!r}")
            answer(frames_out, seq, report)
            continue
        # The dataset's directory is covered in each candidate process's view.
        limits = dataclasses.replace(limits, hidden=(str(Path(req["data"]).parent),))
        report = _run(task, datasets[req["data"]], limits)
        failed = None
        if clean_tmp:  # before answering: the next candidate must find /tmp empty
            try:
                empty_dir(Path("/tmp"), keep)
            except BaseException as e:
                failed = e
        answer(frames_out, seq, report)
        if failed is not None:  # the pool starts a fresh worker (and a fresh /tmp)
            print(f"sandbox worker: cannot clean /tmp ({failed!r}); exiting", file=sys.stderr)
            return


def _run(task: Task, data: SandboxData, limits: Limits) -> Report:
    def on_watch() -> bool:
        frame = read_frame(0)
        if frame is None:  # the evaluator went away: stop the candidate
            return True
        return frame[0] == b"C"

    return run_confined(task, data, limits, watch_fd=0, on_watch=on_watch)


if __name__ == "__main__":
    main()
