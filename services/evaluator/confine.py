"""Run one candidate in a confined child process and collect its report.

The caller (a warm sandbox worker, or the runner in a Kubernetes pod) has already imported
torch and loaded the data. For each candidate it forks one child, which confines itself —
new session, closed file descriptors, clean environment, rlimits, a non-root uid, the seccomp
filter — then runs the harness and writes its report to a pipe. The parent enforces the
wall-clock limit with SIGKILL and turns how the child ended into a status. No child ever serves
two candidates.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nasloop.config import EvaluatorConfig
from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator import seccomp_filter
from services.evaluator.datasets import SandboxData
from services.evaluator.frames import HEADER, payload_length, write_frame
from services.evaluator.report import Report
from services.evaluator.task import Task
from services.evaluator.testset import TestHandover

MAX_RESULT_BYTES = 48 << 20  # below the worker frame limit (64 MiB)
SETUP_FAILED = 70
DRAIN_AFTER_EXIT_S = 2.0
CHILD_ENV = {"HOME": "/tmp", "PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4
CAP_SETFCAP = 31
LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class Limits:
    wall_s: float
    cpu_s: float
    memory_bytes: int
    file_bytes: int
    open_files: int
    uid: int | None  # drop to this uid/gid in the child; None = keep
    gid: int | None
    seccomp: bool
    output_tail_bytes: int = 4096
    # Become uid/gid in a user namespace of the child's own (mapped to the worker's ids)
    # instead of switching to them: how a non-root evaluator, which cannot setuid, gives a
    # candidate another uid than its worker's.
    user_namespace: bool = False


def limits_for(
    task: Task,
    cfg: EvaluatorConfig,
    uid: int | None,
    seccomp: bool,
    user_namespace: bool = False,
) -> Limits:
    wall = task.wall_limit_s(cfg.probe_time_limit_s)
    return Limits(
        wall_s=wall,
        cpu_s=wall * task.threads + 5,
        memory_bytes=cfg.memory_bytes,
        file_bytes=cfg.file_bytes,
        open_files=cfg.open_files,
        uid=uid,
        gid=cfg.sandbox_gid if uid is not None else None,
        seccomp=seccomp,
        output_tail_bytes=cfg.output_tail_bytes,
        user_namespace=user_namespace and uid is not None,
    )


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name} failed: {os.strerror(err)}")


def not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: this process's /proc files belong to root, unreadable to its uid, and
    no process without CAP_SYS_PTRACE over its user namespace may trace it."""
    _libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)


def drop_capabilities(keep: tuple[int, ...] = ()) -> None:
    """capset(2) to nothing but ``keep`` (effective and permitted); inheritable emptied."""
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) for caps 0-31, 32-63
    for cap in keep:
        word = 3 * (cap // 32)
        data[word] |= 1 << (cap % 32)
        data[word + 1] |= 1 << (cap % 32)
    _libc_call("capset", header, data)


def enter_user_namespace(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` in a new user namespace whose only ids map to this process's own
    (an unprivileged process may map its own euid and egid, setgroups denied first), then give
    up the capabilities the new namespace granted. The process must be single-threaded, and
    where its euid is 0 (the worker in bubblewrap's user namespace) it must hold CAP_SETFCAP:
    the kernel maps a parent namespace's uid 0 only for a creator that held it.

    The kernel still sees the worker's uid (signals, file ownership outside); what changes is
    every id check made in a namespace: the candidate is not uid 0 of the worker's namespace
    and holds no capability in it or over it.
    """
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    _libc_call("unshare", CLONE_NEWUSER)
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {outer_uid} 1\n"),
        ("gid_map", f"{gid} {outer_gid} 1\n"),
    ):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    drop_capabilities()
    not_dumpable()  # a change of credentials may have reset it
    if (os.getuid(), os.getgid()) != (uid, gid):
        raise OSError(f"user namespace: uid {os.getuid()}, gid {os.getgid()}")


def _confine(limits: Limits, keep: tuple[int, ...], cuda: bool) -> None:
    os.setsid()
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(low, os.sysconf("SC_OPEN_MAX")))
    os.environ.clear()
    os.environ.update(CHILD_ENV)
    os.chdir("/tmp" if os.path.isdir("/tmp") else "/")
    soft_cpu = max(1, int(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (soft_cpu, soft_cpu + 2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not cuda:  # CUDA reserves huge address ranges; on GPU the pod's cgroup bounds memory
        cap = _vm_size() + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if limits.user_namespace and limits.uid is not None and limits.gid is not None:
        enter_user_namespace(limits.uid, limits.gid)
        return
    if limits.gid is not None:
        os.setgroups([])
        os.setresgid(limits.gid, limits.gid, limits.gid)
    if limits.uid is not None:
        os.setresuid(limits.uid, limits.uid, limits.uid)
        # Counted per uid across all workers' children: a bound on thread bombs, not a quota.
        resource.setrlimit(resource.RLIMIT_NPROC, (1024, 1024))


def _child(
    task: Task,
    data: SandboxData,
    limits: Limits,
    result_fd: int,
    out_fd: int,
    handover: TestHandover | None,
) -> None:
    """Runs in the forked child; never returns.

    Until the ``S`` frame is sent, only trusted code runs here; a child that dies before
    sending it failed in setup (the evaluator's fault), after it everything is the candidate's.
    The test inputs are dropped here: they arrive after training, in the parent's secret order.
    """
    try:
        # This process's copy of the parent's data: its test inputs go before candidate code.
        data.test_x = None
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(devnull)
        if out_fd > 2:
            os.close(out_fd)
        # Whatever sys.stdout was in the parent (a capture, a redirect), prints go to the pipe.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        import torch

        cuda = task.protocol.device == "cuda"
        _confine(limits, (result_fd, *([handover.go_r] if handover else [])), cuda)
        torch.set_num_threads(task.threads)
        if cuda:  # start CUDA before the filter: its start-up uses Unix sockets
            torch.cuda.init()
            data = SandboxData(data.train_x.cuda(), data.train_y.cuda(), None, data.num_classes)
        if limits.seccomp:
            seccomp_filter.install(allow_unix_sockets=cuda)
        from services.evaluator.harness import Harness

        def progress(r: Report) -> None:
            write_frame(result_fd, b"P", wire.encode(r))

        write_frame(result_fd, b"S", b"")
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"nasloop sandbox setup failed: {e!r}\n".encode())
        os._exit(SETUP_FAILED)
    try:
        fetch = None if handover is None else (lambda: handover.receive(result_fd))
        report = Harness(task, data, progress, fetch).run()
        sys.stdout.flush()
        sys.stderr.flush()
        write_frame(result_fd, b"R", wire.encode(report))
    finally:
        os._exit(0)


# Statuses a sandbox may report for itself; anything else it claims becomes NO_RESULT, so that a
# candidate cannot pass its failure off as the evaluator's (INTERNAL_ERROR, EVICTED, ...).
CANDIDATE_STATUSES = frozenset(
    {
        common.STATUS_UNSPECIFIED, common.STATUS_OK, common.STATUS_MISSING_ENTRY_POINT,
        common.STATUS_IMPORT_ERROR, common.STATUS_INIT_EXCEPTION, common.STATUS_PARAMETER_LIMIT,
        common.STATUS_FORWARD_EXCEPTION, common.STATUS_WRONG_OUTPUT_SHAPE,
        common.STATUS_TRAIN_EXCEPTION, common.STATUS_NON_FINITE_LOSS,
        common.STATUS_OUT_OF_MEMORY, common.STATUS_CUDA_OUT_OF_MEMORY,
        common.STATUS_EVAL_EXCEPTION, common.STATUS_PROTOCOL_VIOLATION,
    }
)  # fmt: skip
# Numbers only the candidate's own process measured: reported, never relied on.
INFORMATIVE = ("parameter_count", "loss", "trained_samples", "optimizer_steps")


def _budget(task: Task, data: SandboxData) -> tuple[int, int]:
    """Training samples and batches the protocol allows."""
    p = task.protocol
    n = len(data.train_x) if not p.train_subset else min(p.train_subset, len(data.train_x))
    return n * p.epochs, math.ceil(n / p.batch_size) * p.epochs


def _untrusted(r: Report, max_outputs: int, task: Task, data: SandboxData) -> Report:
    """Bound what a sandbox said about itself: statuses, stages, numbers, output size; check
    what it claims against what this side knows (the limits, the training budget)."""
    r.informative = list(INFORMATIVE)
    samples, steps = _budget(task, data)
    if r.status not in CANDIDATE_STATUSES:
        r.fail(common.STATUS_NO_RESULT, f"the sandbox reported status {r.status}")
    elif r.status == common.STATUS_OK and r.parameter_count > task.protocol.max_parameters:
        r.fail(common.STATUS_PARAMETER_LIMIT, f"{r.parameter_count:,} tensor elements reported")
    elif r.status == common.STATUS_OK and (
        r.trained_samples > samples or r.optimizer_steps > steps
    ):
        r.fail(common.STATUS_PROTOCOL_VIOLATION, "the sandbox reported training beyond one pass")
    r.last_stage = min(max(r.last_stage, common.STAGE_POLICY), common.STAGE_TRAINED)
    for name in ("loss", "train_seconds", "eval_seconds"):
        value = getattr(r, name)
        setattr(r, name, value if math.isfinite(value) and value >= 0 else 0.0)
    r.timings = [(s, t if math.isfinite(t) and t >= 0 else 0.0) for s, t in r.timings]
    if r.outputs is not None and r.outputs.size > max_outputs:
        r.outputs = None
        r.fail(common.STATUS_NO_RESULT, "the sandbox sent more outputs than there are test images")
    return r


def _frames(buf: bytes | bytearray, pos: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
    """(end offset, kind, payload) of each complete frame from ``pos``."""
    while pos + HEADER <= len(buf):
        n = payload_length(bytes(buf[pos : pos + HEADER]))
        if pos + HEADER + n > len(buf):
            return
        yield (
            pos + HEADER + n,
            bytes(buf[pos : pos + 1]),
            bytes(buf[pos + HEADER : pos + HEADER + n]),
        )
        pos += HEADER + n


def _parse_frames(buf: bytes) -> tuple[bool, Report | None, Report | None]:
    """(setup done, last progress report, final report); a bad frame ends parsing.

    Everything after ``S`` was written by the candidate's process: whatever it holds (a forged
    kind, a report nested too deep to parse) is the candidate's failure, never ours.
    """
    setup = False
    progress = final = None
    for _, kind, payload in _frames(buf):
        if kind not in (b"S", b"P", b"R", b"E"):
            break
        if kind == b"S":
            setup = True
            continue
        if kind == b"E":
            continue
        try:
            r = wire.decode(payload)
        except Exception:  # ReportError, and anything a hostile header could still cause
            break
        if kind == b"R":
            final = r
            break  # the first final report counts
        progress = r
    return setup, progress, final


def _from_exit(status: int, rusage: resource.struct_rusage, limits: Limits) -> tuple[int, str]:
    cpu = rusage.ru_utime + rusage.ru_stime
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGSYS:
            return common.STATUS_SANDBOX_VIOLATION, "killed for a forbidden system call (seccomp)"
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= int(limits.cpu_s)):
            return common.STATUS_CPU_TIMEOUT, f"CPU time limit of {int(limits.cpu_s)} s reached"
        if sig == signal.SIGXFSZ:
            return common.STATUS_NO_RESULT, "file size limit exceeded"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        return common.STATUS_NO_RESULT, f"the sandbox ended by signal {name} without a result"
    code = os.WEXITSTATUS(status)
    return common.STATUS_NO_RESULT, f"the sandbox exited with code {code} without a result"


def run_confined(
    task: Task,
    data: SandboxData,
    limits: Limits,
    watch_fd: int | None = None,
    on_watch: Callable[[], bool] | None = None,
) -> Report:
    """Fork a confined child for ``task`` and return its report.

    ``watch_fd`` is polled while the child runs; when it is readable ``on_watch()`` is called and
    a True answer cancels the run (STATUS_CANCELLED).
    """
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    handover = TestHandover.prepare(task, data) if task.mode == "evaluate" else None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        os.close(out_r)
        if watch_fd is not None:
            os.close(watch_fd)
        if handover is not None:
            handover.child_side()
        _child(task, data, limits, result_w, out_w, handover)
    os.close(result_w)
    os.close(out_w)
    if handover is not None:
        handover.parent_side()  # the secret order is drawn now, after the fork
    scanned = 0
    started = time.monotonic()
    deadline = started + limits.wall_s
    result = bytearray()
    tail = bytearray()
    open_fds = {result_r, out_r}
    killed_for: tuple[int, str] | None = None
    exited: tuple[int, resource.struct_rusage] | None = None
    exit_time = 0.0

    def kill(status: int, message: str) -> None:
        nonlocal killed_for
        if killed_for is None:
            killed_for = (status, message)
        for target in (
            lambda: os.killpg(pid, signal.SIGKILL),
            lambda: os.kill(pid, signal.SIGKILL),
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                target()

    try:
        while open_fds or exited is None:
            now = time.monotonic()
            if exited is None and now >= deadline:
                kill(common.STATUS_WALL_TIMEOUT, f"wall-clock limit of {limits.wall_s:g} s reached")
            if exited is not None and now - exit_time > DRAIN_AFTER_EXIT_S:
                break  # something (a leaked descendant in weak mode) still holds the pipes
            watch = [watch_fd] if watch_fd is not None else []
            ready, _, _ = select.select([*open_fds, *watch], [], [], 0.05)
            for fd in ready:
                if fd == watch_fd:
                    if on_watch is not None and on_watch():
                        kill(common.STATUS_CANCELLED, "cancelled by the caller")
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == result_r:
                    result += chunk
                    if len(result) > MAX_RESULT_BYTES:
                        kill(common.STATUS_NO_RESULT, "the sandbox sent an oversized result")
                        open_fds.discard(fd)
                    for end, kind, _ in _frames(result, scanned):
                        scanned = end
                        if kind == b"E" and handover is not None:
                            handover.serve()
                else:
                    tail += chunk
                    if len(tail) > 2 * limits.output_tail_bytes:
                        del tail[: len(tail) - limits.output_tail_bytes]
            if exited is None:
                wpid, status, rusage = os.wait4(pid, os.WNOHANG)
                if wpid:
                    exited = (status, rusage)
                    exit_time = time.monotonic()
                    # Leftovers of its session (possible in weak mode only).
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
    finally:
        for fd in (result_r, out_r):
            os.close(fd)
        if handover is not None:
            handover.close()
        if exited is None:
            kill(common.STATUS_INTERNAL_ERROR, "the evaluator stopped the run")
            _, status, rusage = os.wait4(pid, 0)
            exited = (status, rusage)

    setup, progress, final = _parse_frames(bytes(result))
    max_outputs = len(data.test_x) * data.num_classes
    progress = _untrusted(progress, max_outputs, task, data) if progress is not None else None
    final = _untrusted(final, max_outputs, task, data) if final is not None else None
    if final is not None and final.outputs is not None and handover is not None:
        final.outputs = handover.restore_order(final.outputs)
    status, rusage = exited
    if not setup and killed_for is None:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        report = Report(last_stage=common.STAGE_POLICY)
        report.fail(common.STATUS_INTERNAL_ERROR, f"the sandbox failed to start (exit {code})")
    elif killed_for is not None:
        report = progress or Report(last_stage=common.STAGE_POLICY)
        report.outputs = None
        report.fail(*killed_for)
    elif final is not None and os.WIFEXITED(status):
        report = final
    else:
        report = progress or Report(last_stage=common.STAGE_POLICY)
        report.outputs = None
        report.fail(*_from_exit(status, rusage, limits))
    report.peak_memory_bytes = max(report.peak_memory_bytes, rusage.ru_maxrss * 1024)
    keep = limits.output_tail_bytes
    report.output_tail = bytes(tail[-keep:] if keep else b"").decode("utf-8", "replace")
    return report
