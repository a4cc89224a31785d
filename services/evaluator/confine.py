"""Run one candidate in confined child processes and collect its report.

The caller (a warm sandbox worker, or the runner in a Kubernetes pod) has already imported
torch and holds the data where no child inherits it (:mod:`services.evaluator.private`). For
each candidate it forks a train process (build, then train on batches it asks this side for,
then export the state) and, once that has ended, a fresh score process per chunk of test inputs
(the architecture again and the exported state, nothing else). Each child confines itself — new
session, closed file descriptors, clean environment, rlimits, its own mount namespace with a
fresh size-limited /tmp, an empty /dev/shm and the dataset directory covered, a non-root uid,
the seccomp filter — then runs its phase of the harness and writes frames to a pipe. This side
serves the batches, times the train process on its kernel CPU clock and the first score
process's reference training step on its own (:mod:`services.evaluator.epoch`), parses the
exported state itself (:mod:`services.evaluator.statefile`), enforces the wall-clock limit with
SIGKILL and turns how each child ended into a status. No child ever serves two phases or two
candidates.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import math
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasloop.config import EvaluatorConfig
from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator import seccomp_filter, statefile
from services.evaluator.datasets import SandboxData
from services.evaluator.epoch import REFERENCE_STEPS, Ledger
from services.evaluator.feed import Server
from services.evaluator.frames import HEADER, payload_length, write_frame
from services.evaluator.harness import Geometry
from services.evaluator.preload import preload
from services.evaluator.private import private_data
from services.evaluator.report import Report
from services.evaluator.task import Task
from services.evaluator.testset import SecretOrder, TestHandover

MAX_RESULT_BYTES = 48 << 20  # below the worker frame limit (64 MiB)
SETUP_FAILED = 70
DRAIN_AFTER_EXIT_S = 2.0
CHILD_ENV = {"HOME": "/tmp", "PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MS_REMOUNT, MS_BIND, MS_RELATIME = 0x20, 0x1000, 1 << 21
ST_NOATIME, ST_NODIRATIME, ST_RELATIME = 1024, 2048, 4096  # = MS_NOATIME, MS_NODIRATIME
O_PATH = getattr(os, "O_PATH", 0o10000000)
TMP_INODES = 4096
F_SETPIPE_SZ = 1031
PAGE = os.sysconf("SC_PAGE_SIZE")
PRIVATE = b"private"  # the S frame of a child that has its own /tmp and /dev/shm
PR_SET_DUMPABLE = 4
CAP_SETFCAP = 31
LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class Limits:
    wall_s: float  # the build and train phases; the score phase gets as much again
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
    # Size of the private /tmp each candidate process mounts for itself.
    tmp_bytes: int = 64 << 20
    # Directories the parent empties after each process (the pod, where a child may be unable
    # to mount its own): everything in them is the candidates' to lose.
    scrub_dirs: tuple[str, ...] = ()
    # Directories covered with an empty one in each candidate process (the dataset files').
    hidden: tuple[str, ...] = ()
    # On CUDA: this process's share of the GPU's memory (torch's caching allocator; the local
    # workers share one GPU), and the host memory is bounded from outside (no RLIMIT_AS there).
    gpu_memory_fraction: float = 1.0


def limits_for(
    task: Task,
    cfg: EvaluatorConfig,
    uid: int | None,
    seccomp: bool,
    user_namespace: bool = False,
    scrub_dirs: tuple[str, ...] = (),
    gpu_share: float = 1.0,
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
        tmp_bytes=cfg.tmp_bytes,
        scrub_dirs=scrub_dirs,
        gpu_memory_fraction=gpu_share,
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


def empty_dir(root: Path, keep: set[str]) -> None:
    """Remove everything in ``root`` but the entries named in ``keep``. Iterative, so that a
    candidate's 3,000-deep directory tree cannot exhaust the recursion."""
    stack = [root / name for name in os.listdir(root) if name not in keep]
    dirs: list[Path] = []
    while stack:
        path = stack.pop()
        if path.is_dir() and not path.is_symlink():
            dirs.append(path)
            stack.extend(path / name for name in os.listdir(path))
        else:
            path.unlink(missing_ok=True)
    for d in reversed(dirs):  # children were appended after their parents
        d.rmdir()


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    args = [None if v is None else v.encode() for v in (source, target, fstype)]
    if libc.mount(*args, ctypes.c_ulong(flags), None if data is None else data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _kept_flags(path: str) -> int:
    """The mount flags of ``path`` that a remount must repeat (in a user namespace the kernel
    refuses one that drops a flag the mount was locked with): nosuid, nodev, noexec, atime."""
    st = os.statvfs(path).f_flag
    flags = st & (MS_NOSUID | MS_NODEV | MS_NOEXEC | ST_NOATIME | ST_NODIRATIME)
    return flags | (MS_RELATIME if st & ST_RELATIME else 0)


def code_under_tmp() -> tuple[str, ...]:
    """What this process's code runs from that lies under /tmp (a checkout or a venv there: the
    interpreter's prefix, each ``sys.path`` entry, the project): a fresh /tmp would hide it,
    and modules imported later (``numpy.ctypeslib``, ``torch.utils.cpp_extension``) would be
    missing. Outermost paths only."""
    root = Path(__file__).resolve().parents[2]
    found = sorted(
        {
            str(Path(p).absolute())
            for p in (sys.prefix, str(root), *sys.path)
            if p
            and Path(p).absolute().is_relative_to("/tmp")
            and Path(p).absolute() != Path("/tmp")
        }
    )
    outer: list[str] = []
    for p in found:
        if not any(Path(p).is_relative_to(o) for o in outer):
            outer.append(p)
    return tuple(outer)


def private_mounts(
    tmp_bytes: int, hidden: tuple[str, ...] = (), keep: tuple[str, ...] | None = None
) -> None:
    """In the mount namespace this process has just made: a fresh, size- and inode-limited
    /tmp, and an empty read-only /dev/shm and /dev/mqueue, seen by this process alone and gone
    with it (nothing one candidate process writes is there for the next); each ``hidden``
    directory covered with an empty read-only one (the dataset files are not in its view).

    The ``keep`` paths under /tmp (default :func:`code_under_tmp`: the code this process runs)
    are bound read-only into the fresh /tmp, with everything mounted below them (the strict
    view's emptied site-packages and its allowed entries): they were opened before the old /tmp
    was covered, so the fresh one shows them and nothing else of it."""
    keep = code_under_tmp() if keep is None else keep
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    held = [(path, os.open(path, O_PATH)) for path in keep if os.path.exists(path)]
    flags = MS_NOSUID | MS_NODEV
    try:
        _mount(
            "tmpfs", "/tmp", "tmpfs", flags, f"size={tmp_bytes},nr_inodes={TMP_INODES},mode=1777"
        )
        for path, fd in held:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o444))
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
            _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(path), None)
    finally:
        for _, fd in held:
            os.close(fd)
    for d in ("/dev/shm", "/dev/mqueue", *hidden):
        if os.path.isdir(d):  # (a hidden directory under /tmp is gone already)
            _mount("tmpfs", d, "tmpfs", flags | MS_NOEXEC | MS_RDONLY, "size=4k,nr_inodes=1")


def enter_user_namespace(
    uid: int, gid: int, tmp_bytes: int | None = None, hidden: tuple[str, ...] = ()
) -> None:
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
    _libc_call("unshare", CLONE_NEWUSER | (CLONE_NEWNS if tmp_bytes is not None else 0))
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
    if tmp_bytes is not None:  # with the capabilities the new namespace granted
        private_mounts(tmp_bytes, hidden)
    drop_capabilities()
    not_dumpable()  # a change of credentials may have reset it
    if (os.getuid(), os.getgid()) != (uid, gid):
        raise OSError(f"user namespace: uid {os.getuid()}, gid {os.getgid()}")


def _confine(limits: Limits, keep: tuple[int, ...], cuda: bool) -> bool:
    """Confine this child; True when it got a /tmp and /dev/shm of its own."""
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
        enter_user_namespace(limits.uid, limits.gid, limits.tmp_bytes, limits.hidden)
        os.chdir("/tmp")
        return True
    private = True
    if os.geteuid() == 0:  # root (or uid 0 of bubblewrap's namespace, holding CAP_SYS_ADMIN)
        _libc_call("unshare", CLONE_NEWNS)
        private_mounts(limits.tmp_bytes, limits.hidden)
    else:  # weak mode and the pod, non-root: a user namespace of its own ids, where allowed
        try:
            enter_user_namespace(os.geteuid(), os.getegid(), limits.tmp_bytes, limits.hidden)
        except OSError:  # none here: the parent empties what this child added (_Scrub)
            private = False
    os.chdir("/tmp")
    if limits.gid is not None:
        os.setgroups([])
        os.setresgid(limits.gid, limits.gid, limits.gid)
    if limits.uid is not None:
        os.setresuid(limits.uid, limits.uid, limits.uid)
        # Counted per uid across all workers' children: a bound on thread bombs, not a quota.
        resource.setrlimit(resource.RLIMIT_NPROC, (1024, 1024))
    return private


def _exit_setup_failed(e: BaseException) -> None:
    with contextlib.suppress(BaseException):
        os.write(2, f"nasloop sandbox setup failed: {e!r}\n".encode())
    os._exit(SETUP_FAILED)


def _enter(task: Task, limits: Limits, out_fd: int, keep: tuple[int, ...]) -> bytes:
    """The trusted start of every candidate process: output to the pipe, confined, filtered.
    Returns the ``S`` frame's payload: ``private`` when it has a /tmp of its own."""
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
    private = _confine(limits, keep, cuda)
    torch.set_num_threads(task.threads)
    if cuda:  # start CUDA before the filter: its start-up uses Unix sockets
        torch.cuda.init()
        torch.cuda.set_per_process_memory_fraction(limits.gpu_memory_fraction)
    if limits.seccomp:
        seccomp_filter.install(allow_unix_sockets=cuda)
    return PRIVATE if private else b""


def _train_child(
    task: Task, geometry: Geometry, limits: Limits, result_fd: int, out_fd: int, data_fd: int
) -> None:
    """The build and train phases; runs in the forked child, never returns.

    Until the ``S`` frame is sent, only trusted code runs here; a child that dies before
    sending it failed in setup (the evaluator's fault), after it everything is the candidate's.
    """
    try:
        started = _enter(task, limits, out_fd, (result_fd, data_fd))
        from services.evaluator.feed import pipe_stream
        from services.evaluator.harness import Harness

        def progress(r: Report) -> None:
            write_frame(result_fd, b"P", wire.encode(r))

        def stream(epoch: int) -> Any:
            return pipe_stream(task, geometry.train_size, result_fd, data_fd)

        write_frame(result_fd, b"S", started)
    except BaseException as e:
        _exit_setup_failed(e)
    try:
        harness = Harness(task, geometry, progress, stream=stream)
        report = harness.run()
        sys.stdout.flush()
        sys.stderr.flush()
        if harness.state is not None and report.status == common.STATUS_OK:
            write_frame(result_fd, b"W", harness.state)
        write_frame(result_fd, b"R", wire.encode(report))
    finally:
        os._exit(0)


def _score_child(
    task: Task,
    geometry: Geometry,
    limits: Limits,
    result_fd: int,
    out_fd: int,
    state: bytes,
    handover: TestHandover,
    reference: bool,
) -> None:
    """One chunk of the score phase; runs in the forked child, never returns. With
    ``reference``, after its report it times the reference training step for the epoch check
    (:mod:`services.evaluator.epoch`)."""
    try:
        started = _enter(task, limits, out_fd, (result_fd, handover.go_r))
        from services.evaluator.harness import Scorer

        write_frame(result_fd, b"S", started)
    except BaseException as e:
        _exit_setup_failed(e)
    try:
        scorer = Scorer(task, geometry)
        report = scorer.run(state, lambda: handover.receive(result_fd))
        sys.stdout.flush()
        sys.stderr.flush()
        write_frame(result_fd, b"R", wire.encode(report))
        if reference and report.status == common.STATUS_OK:

            def mark() -> None:  # the parent reads this process's clock, then lets it go on
                write_frame(result_fd, b"M", b"")
                if os.read(handover.go_r, 1) != b"K":
                    raise RuntimeError("the reference step's mark was not acknowledged")

            try:
                scorer.reference(mark, REFERENCE_STEPS)
            except BaseException as e:  # the verdict on it is the missing mark
                print(
                    f"reference training step: {type(e).__name__}: {e}", file=sys.stderr, flush=True
                )
            # The network's descriptors (macs, depth, families): not part of the reward; one that
            # breaks the counter only goes without them (0 / empty), silently.
            with contextlib.suppress(BaseException):
                write_frame(result_fd, b"D", wire.encode_descriptors(*scorer.descriptors()))
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
    r.macs, r.depth, r.layer_families = 0, 0, []  # measured by the score phase alone (_score)
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
        if kind not in (b"S", b"P", b"R", b"E", b"B", b"W", b"M"):
            break
        if kind == b"S":
            setup = True
            continue
        if kind in (b"E", b"B", b"W", b"M"):
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


def _descriptors(result: bytes) -> tuple[int, int, list[str]]:
    """The descriptors the first score process sent (a ``D`` frame after its report), or 0 /
    empty where it sent none or a malformed one."""
    reported = False
    for _, kind, payload in _frames(result):
        if kind == b"R":
            reported = True
        elif kind == b"D" and reported:
            try:
                return wire.decode_descriptors(payload)
            except wire.ReportError:
                break
    return 0, 0, []


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


@dataclass
class _Ended:
    """How one confined process ended, as its parent saw it."""

    result: bytes
    tail: bytes
    killed_for: tuple[int, str] | None
    status: int
    rusage: resource.struct_rusage


def _oversized(result: bytearray, at: int, max_state: int) -> bool:
    """The frame starting at ``at`` announces more than its kind may carry: the exported state
    (``W``) up to ``max_state`` bytes, every other frame up to MAX_RESULT_BYTES."""
    if len(result) - at < HEADER:
        return False
    kind, n = result[at : at + 1], payload_length(bytes(result[at : at + HEADER]))
    return n > (max_state if kind == b"W" else MAX_RESULT_BYTES)


def _host_memory(task: Task, limits: Limits) -> int | None:
    """The resident-memory bound the parent enforces: on CUDA only (elsewhere RLIMIT_AS holds,
    which CUDA's address-space reservations rule out)."""
    return limits.memory_bytes if task.protocol.device == "cuda" else None


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pipe() -> tuple[int, int]:
    """A pipe with a 1 MiB buffer where the kernel allows it (batches and states are large)."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    return r, w


def _supervise(
    pid: int,
    result_r: int,
    out_r: int,
    limits: Limits,
    deadline: float,
    max_result: int,
    on_frame: Callable[[bytes], bytes],
    data_w: int | None = None,
    watch_fd: int | None = None,
    on_watch: Callable[[], bool] | None = None,
    rss_limit: int | None = None,
) -> _Ended:
    """Watch one confined child until it ends: its frames (``on_frame`` answers each kind with
    bytes for the data pipe), its output, the deadline, the caller's cancel."""
    scanned = 0
    result = bytearray()
    tail = bytearray()
    pending = bytearray()
    open_fds = {result_r, out_r}
    killed_for: tuple[int, str] | None = None
    exited: tuple[int, resource.struct_rusage] | None = None
    exit_time = 0.0
    if data_w is not None:
        os.set_blocking(data_w, False)

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
            if exited is None and rss_limit is not None and _rss(pid) > rss_limit:
                kill(common.STATUS_OUT_OF_MEMORY, f"host memory above {rss_limit:,} bytes")
            if exited is not None and now - exit_time > DRAIN_AFTER_EXIT_S:
                break  # something (a leaked descendant in weak mode) still holds the pipes
            watch = [watch_fd] if watch_fd is not None else []
            writable = [data_w] if data_w is not None and pending and exited is None else []
            ready, can_write, _ = select.select([*open_fds, *watch], writable, [], 0.05)
            if can_write and data_w is not None:  # can_write is [data_w] or empty
                try:
                    del pending[: os.write(data_w, pending)]
                except BlockingIOError:
                    pass
                except OSError:  # the child closed its end
                    pending.clear()
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
                    if len(result) > max_result:
                        kill(common.STATUS_NO_RESULT, "the sandbox sent an oversized result")
                        open_fds.discard(fd)
                    for end, kind, _ in _frames(result, scanned):
                        scanned = end
                        pending += on_frame(kind)
                    if _oversized(result, scanned, max_result):
                        kill(common.STATUS_NO_RESULT, "the sandbox sent an oversized result")
                        open_fds.discard(fd)
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
        for fd in (result_r, out_r, *([data_w] if data_w is not None else [])):
            os.close(fd)
        if exited is None:
            kill(common.STATUS_INTERNAL_ERROR, "the evaluator stopped the run")
            _, status, rusage = os.wait4(pid, 0)
            exited = (status, rusage)
    return _Ended(bytes(result), bytes(tail), killed_for, *exited)


def _outcome(ended: _Ended, limits: Limits, check: Callable[[Report], Report]) -> Report:
    """The report of one process: its own final report (checked), or how it ended."""
    setup, progress, final = _parse_frames(ended.result)
    progress = check(progress) if progress is not None else None
    final = check(final) if final is not None else None
    status = ended.status
    if not setup and ended.killed_for is None:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        report = Report(last_stage=common.STAGE_POLICY)
        report.fail(common.STATUS_INTERNAL_ERROR, f"the sandbox failed to start (exit {code})")
    elif ended.killed_for is not None:
        report = progress or Report(last_stage=common.STAGE_POLICY)
        report.outputs = None
        report.fail(*ended.killed_for)
    elif final is not None and os.WIFEXITED(status):
        report = final
    else:
        report = progress or Report(last_stage=common.STAGE_POLICY)
        report.outputs = None
        report.fail(*_from_exit(status, ended.rusage, limits))
    report.peak_memory_bytes = max(report.peak_memory_bytes, ended.rusage.ru_maxrss * 1024)
    return report


def _state_frame(result: bytes) -> bytes | None:
    for _, kind, payload in _frames(result):
        if kind == b"W":
            return payload
        if kind == b"R":
            return None
    return None


def _fork(child: Callable[[int, int], None]) -> tuple[int, int, int]:
    """Fork ``child(result_w, out_w)``; (pid, result_r, out_r) in the parent."""
    result_r, result_w = _pipe()
    out_r, out_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        os.close(out_r)
        child(result_w, out_w)
    os.close(result_w)
    os.close(out_w)
    return pid, result_r, out_r


class _Scrub:
    """Where a child could not mount a /tmp of its own (a pod without user namespaces): after
    it ends, remove every path it added under ``limits.scrub_dirs`` (any not there before the
    first child started), so that the next process finds none of it. Only then: where the
    child had its own mounts (its first ``S`` frame, written before any candidate code, says
    so) there is nothing to remove, and nothing else is ever touched."""

    def __init__(self, limits: Limits) -> None:
        self.before = {d: set(_tree(Path(d))) for d in limits.scrub_dirs if os.path.isdir(d)}

    def after(self, ended: _Ended) -> None:
        first = next(_frames(ended.result), None)
        if first is not None and first[1:] == (b"S", PRIVATE):
            return
        for root, keep in self.before.items():
            for path in sorted(_tree(Path(root)), key=lambda p: -len(p.parts)):
                if path not in keep:  # deepest first: a directory is empty when its turn comes
                    with contextlib.suppress(OSError):
                        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def _tree(root: Path) -> list[Path]:
    """Every path under ``root`` (iteratively; symlinks not followed)."""
    out, todo = [], [root]
    while todo:
        d = todo.pop()
        with contextlib.suppress(OSError):
            for name in os.listdir(d):
                p = d / name
                out.append(p)
                if p.is_dir() and not p.is_symlink():
                    todo.append(p)
    return out


def run_confined(
    task: Task,
    data: SandboxData,
    limits: Limits,
    watch_fd: int | None = None,
    on_watch: Callable[[], bool] | None = None,
) -> Report:
    """Evaluate ``task`` in confined children and return the report.

    One child builds and trains (it asks for each training batch; this side times it, see
    :mod:`services.evaluator.epoch`) and exports its state; then fresh children score the test
    inputs a chunk each, from that state alone (:mod:`services.evaluator.testset`).
    ``watch_fd`` is polled meanwhile; when it is readable ``on_watch()`` is called and a True
    answer cancels the run (STATUS_CANCELLED).
    """
    preload()  # what the children import lazily, before the first fork (the worker did it)
    given, data = data, private_data(data)  # the worker's and the pod's already are
    geometry = Geometry.of(data, task)
    deadline = time.monotonic() + limits.wall_s
    max_result = MAX_RESULT_BYTES + 8 * task.protocol.max_parameters
    data_r, data_w = _pipe()
    server = Server(task, data)
    scrub = _Scrub(limits)

    def train(result_w: int, out_w: int) -> None:
        os.close(data_w)
        if watch_fd is not None:
            os.close(watch_fd)
        _forget(given, data)
        _train_child(task, geometry, limits, result_w, out_w, data_r)

    pid, result_r, out_r = _fork(train)
    os.close(data_r)
    ledger = Ledger(pid, wall=task.protocol.device == "cuda")

    def on_train_frame(kind: bytes) -> bytes:
        if kind == b"B":
            ledger.request()
            answer = server.answer()
            ledger.batches = server.served
            return answer
        if kind == b"W":
            ledger.finish()
        return b""

    ended = _supervise(
        pid, result_r, out_r, limits, deadline, max_result, on_train_frame, data_w,
        watch_fd, on_watch, _host_memory(task, limits),
    )  # fmt: skip
    scrub.after(ended)
    max_outputs = len(data.test_x) * data.num_classes
    report = _outcome(ended, limits, lambda r: _untrusted(r, max_outputs, task, data))
    tails = [ended.tail]
    report.outputs = None
    state = _state_frame(ended.result) if report.status == common.STATUS_OK else None
    if report.status == common.STATUS_OK and task.mode == "evaluate":
        report = _checked_state(report, state, ledger, task)
        if report.status == common.STATUS_OK:
            assert state is not None
            _score(
                task,
                (given, data),
                limits,
                (state, ledger),
                report,
                tails,
                scrub,
                (watch_fd, on_watch),
            )
    keep = limits.output_tail_bytes
    tail = b"".join(tails)
    report.output_tail = bytes(tail[-keep:] if keep else b"").decode("utf-8", "replace")
    return report


def _checked_state(report: Report, state: bytes | None, ledger: Ledger, task: Task) -> Report:
    """The trusted side's verdicts on the train phase: one epoch, and the exported state."""
    if state is None:
        return report.fail(common.STATUS_NO_RESULT, "the train process exported no state")
    why = ledger.verdict(len(state))
    if why is not None:
        return report.fail(common.STATUS_PROTOCOL_VIOLATION, why)
    try:
        entries = statefile.parse(state, task.protocol.max_parameters)
    except statefile.StateError as e:
        status = common.STATUS_PARAMETER_LIMIT if "elements" in str(e) else common.STATUS_NO_RESULT
        return report.fail(status, str(e))
    report.parameter_count = statefile.elements(entries)
    report.informative = [n for n in report.informative if n != "parameter_count"]
    return report


class _ScoreFrames:
    """The parent's answers to one score process's frames: its test inputs (``E``) and, where
    it times the reference step (``ledger``), a timestamp and an acknowledgement for each mark
    (``M``) it sends after its report."""

    def __init__(self, handover: TestHandover, pid: int, ledger: Ledger | None) -> None:
        self.handover, self.pid, self.ledger = handover, pid, ledger
        self.reported = False

    def __call__(self, kind: bytes) -> bytes:
        with contextlib.suppress(OSError):  # the child may have closed its end
            if kind == b"E":
                self.handover.serve()
            elif kind == b"R":
                self.reported = True
            elif kind == b"M" and self.reported and self.ledger and self.ledger.mark(self.pid):
                os.write(self.handover.go_w, b"K")  # at most REFERENCE_STEPS + 1: never blocks
        return b""


def _forget(*datas: SandboxData) -> None:
    """In a child: drop this process's references to the data (the private copy's pages are
    not even mapped here)."""
    for d in datas:
        d.train_x = d.train_y = d.test_x = None


def _score(
    task: Task,
    datas: tuple[SandboxData, SandboxData],
    limits: Limits,
    trained: tuple[bytes, Ledger],
    report: Report,
    tails: list[bytes],
    scrub: _Scrub,
    watch: tuple[int | None, Callable[[], bool] | None],
) -> None:
    """Score the exported state in fresh children, one chunk of test inputs each. The first
    one then times the reference training step, and the epoch check's reference verdict
    (:mod:`services.evaluator.epoch`) is given before the next chunk."""
    state, ledger = trained
    data = datas[1]
    geometry = Geometry.of(data, task)
    watch_fd, on_watch = watch
    deadline = time.monotonic() + limits.wall_s  # all chunks together
    canonical = statefile.encode(statefile.parse(state, task.protocol.max_parameters))
    n = task.protocol.test_subset or len(data.test_x)
    secret = SecretOrder(data.test_x[:n])
    outputs = []
    eval_seconds = 0.0
    described: tuple[int, int, list[str]] = (0, 0, [])
    for lo, hi in secret.chunks():
        handover = TestHandover(secret, lo, hi)

        def score(
            result_w: int, out_w: int, handover: TestHandover = handover, lo: int = lo
        ) -> None:
            handover.child_side()
            if watch_fd is not None:
                os.close(watch_fd)
            _forget(*datas)
            _score_child(task, geometry, limits, result_w, out_w, canonical, handover, lo == 0)

        pid, result_r, out_r = _fork(score)
        handover.parent_side()
        on_score_frame = _ScoreFrames(handover, pid, ledger if lo == 0 else None)

        try:
            ended = _supervise(
                pid, result_r, out_r, limits, deadline, MAX_RESULT_BYTES, on_score_frame,
                None, watch_fd, on_watch, _host_memory(task, limits),
            )  # fmt: skip
        finally:
            handover.close()
        scrub.after(ended)
        tails.append(ended.tail)

        def check(r: Report, most: int = (hi - lo) * data.num_classes) -> Report:
            return _untrusted(r, most, task, data)

        part = _outcome(ended, limits, check)
        got = part.outputs
        if part.status == common.STATUS_OK and (
            got is None or got.shape != (hi - lo, data.num_classes)
        ):
            part.fail(common.STATUS_NO_RESULT, "the score process returned no usable outputs")
        if part.status != common.STATUS_OK or got is None:
            report.fail(part.status, part.message)
            report.peak_memory_bytes = max(report.peak_memory_bytes, part.peak_memory_bytes)
            return
        outputs.append(got)
        eval_seconds += part.eval_seconds
        report.peak_memory_bytes = max(report.peak_memory_bytes, part.peak_memory_bytes)
        why = ledger.reference_verdict(len(state)) if lo == 0 else None
        if why is not None:
            report.fail(common.STATUS_PROTOCOL_VIOLATION, why)
            return
        if lo == 0:
            described = _descriptors(ended.result)
    restored = secret.restore(np.concatenate(outputs)) if outputs else None
    if restored is None:
        report.fail(common.STATUS_NO_RESULT, "the score processes returned no usable outputs")
        return
    report.outputs = restored
    report.eval_seconds = eval_seconds
    report.macs, report.depth, report.layer_families = described
