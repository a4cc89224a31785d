"""One warm sandbox worker process, and the bubblewrap command that confines it.

Strict mode: the worker runs under bubblewrap in new network (no interfaces but loopback, which
is down), PID, IPC, UTS and mount namespaces, sees a read-only view of only what Python needs
(the system's /usr, the interpreter, the virtual environment, nasloop's own code and the
prepared datasets; every directory of installed packages in it emptied but for the allowed
ones), gets a size-limited private /tmp and a clean environment, and keeps only the
capabilities it needs to drop each child to the sandbox uid and to clean up after it. Weak mode
(no bubblewrap) runs the same worker as a plain subprocess; children still get rlimits, the
seccomp filter where available, and the sandbox uid when the evaluator is root.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import select
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import services
from nasloop import keeper
from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator import view
from services.evaluator.confine import Limits
from services.evaluator.frames import read_frame, write_frame
from services.evaluator.report import Report
from services.evaluator.task import Task

log = logging.getLogger("nasloop.evaluator.sandbox")

PROJECT_ROOT = Path(services.__file__).resolve().parent.parent
# SETUID/SETGID: drop each child to the sandbox uid; KILL: stop it; DAC_OVERRIDE/FOWNER: clean
# up what it left in /tmp; SYS_ADMIN: remount the private /tmp with an inode limit at start.
# A child loses all of them when it changes uid.
WORKER_CAPS = (
    "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SYS_ADMIN",
)  # fmt: skip
TMP_INODES = 4096
WORKER_DIED = "the sandbox worker died"
# Time a worker gets beyond a candidate's wall limit to report before it is itself killed.
BACKSTOP_S = 30.0
START_TIMEOUT_S = 180.0


class SandboxError(RuntimeError):
    """The sandbox cannot be set up (e.g. bubblewrap is missing in strict mode)."""


def _dedupe(paths: list[Path]) -> list[Path]:
    """Drop paths inside another listed path; keep order."""
    out: list[Path] = []
    for p in sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out


# Where a system keeps Python packages outside the virtual environment. All of /usr is in the
# view, whichever interpreter runs the worker: Debian's python3-sklearn puts scikit-learn, and
# with it the digits files (the evaluation's test set), in /usr/lib/python3/dist-packages.
SYSTEM_PACKAGE_GLOBS = tuple(
    f"{prefix}/{lib}/python3*/{kind}-packages"
    for prefix in ("/usr", "/usr/local")
    for lib in ("lib", "lib64")
    for kind in ("dist", "site")
)


@functools.cache
def _base_sys_path() -> tuple[str, ...]:
    """The base interpreter's own ``sys.path`` (what its ``site`` and ``.pth`` files add), asked
    of the interpreter itself; its ``site`` directories where it cannot be asked."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    probe = "import json, sys; print(json.dumps(sys.path))"
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        done = subprocess.run(
            [base, "-I", "-c", probe], capture_output=True, timeout=30, check=True, env={}
        )
        return tuple(str(p) for p in json.loads(done.stdout))
    return tuple(site.getsitepackages([sys.base_prefix]))


def hidden_package_dirs() -> list[Path]:
    """Every directory of installed packages the view empties: the virtual environment's
    ``site-packages``, the base interpreter's (its ``sysconfig`` scheme and each
    ``site-packages``/``dist-packages`` on its ``sys.path``) and the system's
    (:data:`SYSTEM_PACKAGE_GLOBS`). Only those that exist; none inside another."""
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
    found = [view.site_packages(), Path(base["purelib"]), Path(base["platlib"])]
    found += [
        Path(p) for p in _base_sys_path() if Path(p).name in ("site-packages", "dist-packages")
    ]
    for pattern in SYSTEM_PACKAGE_GLOBS:
        found += [Path(p) for p in sorted(glob.glob(pattern))]
    # Nothing to hide where there is no directory (a base interpreter without site-packages of
    # its own): bubblewrap cannot make a mount point inside the read-only /usr.
    return _dedupe([p for p in found if p.is_dir()])


def _python_view(data_dir: Path) -> list[str]:
    """Binds for the interpreter, the standard library, the allowed site-packages entries
    (:mod:`services.evaluator.view`), nasloop's code and the sandbox datasets; every other
    installed package stays invisible, the base interpreter's and the system's included
    (:func:`hidden_package_dirs`)."""
    code = [PROJECT_ROOT / "nasloop", PROJECT_ROOT / "services"]
    venv = Path(sys.prefix)
    tops = [Path(sys.base_prefix), *code, data_dir / "sandbox"]
    if venv != Path(sys.base_prefix):
        tops += [venv / "bin", venv / "pyvenv.cfg"]
    args: list[str] = []
    made: set[Path] = set()

    def parents(path: Path) -> None:
        # bubblewrap would create missing parents mode 0700, which the sandbox uid cannot enter.
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in made and parent != Path("/tmp"):
                args.extend(["--perms", "0755", "--dir", str(parent)])
                made.add(parent)

    tops = _dedupe(tops)
    for path in tops:
        parents(path)
        args += ["--ro-bind", str(path), str(path)]
    # Emptied, then only what may be seen inside each: the allowed distributions' entries
    # (from a system directory too, where a venv sees the system's packages) and any of the
    # binds above that lie inside (nasloop's code installed into site-packages).
    # (An entry's directory is resolved, not the entry: a symlinked module stays a link.)
    keep = {p.parent.resolve() / p.name for p in [*view.allowed_entries(), *tops]}
    for sp in hidden_package_dirs():
        parents(sp)
        args += ["--perms", "0755", "--tmpfs", str(sp)]
        made.add(sp)
        for entry in sorted(p for p in keep if sp in p.parents):
            parents(entry)
            args += ["--ro-bind", str(entry), str(entry)]
        args += ["--remount-ro", str(sp)]
    return args


# NVIDIA's device nodes (the driver's control and UVM nodes, one per GPU) and the variables that
# say which GPUs a process may use and where the driver's libraries are (a GPU node may keep them
# outside ld.so.cache). Bound and passed only where they exist; a CPU machine has none.
GPU_DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/*")
GPU_ENVIRONMENT = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")


def _gpu_devices() -> list[str]:
    args: list[str] = []
    for pattern in GPU_DEVICE_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if not os.path.isdir(path):
                args += ["--dev-bind", path, path]
    return args


def _gpu_environment() -> list[str]:
    args: list[str] = []
    for name in GPU_ENVIRONMENT:
        if os.environ.get(name):
            args += ["--setenv", name, os.environ[name]]
    return args


def bwrap_command(bwrap: str, data_dir: Path, tmp_bytes: int) -> list[str]:
    # No --die-with-parent: its signal fires when the *thread* that started the worker ends,
    # and workers are started from short-lived threads. A worker exits at the end of its stdin
    # instead, so it still goes when the evaluator does.
    args = [
        bwrap,
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--new-session", "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        for cap in WORKER_CAPS:
            args += ["--cap-add", cap]
    else:
        # Non-root (e.g. a container under Pod Security "restricted"): a user namespace in which
        # the worker keeps CAP_SYS_ADMIN just long enough to bound /tmp's inodes, then drops
        # every capability but CAP_SETFCAP before it forks a child (NASLOOP_SANDBOX_DROP_CAPS).
        # Each child becomes the sandbox uid in a user namespace of its own, mapped to the
        # worker's uid 0 here, which the kernel allows only to a holder of CAP_SETFCAP.
        args += ["--unshare-user", "--uid", "0", "--gid", "0"]
        args += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETFCAP"]
    for top in ("/bin", "/lib", "/lib32", "/lib64", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # /tmp first, so that binds below it (a data directory under /tmp) stay visible.
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += _python_view(data_dir)
    args += ["--proc", "/proc", "--dev", "/dev", *_gpu_devices()]
    # The root is bubblewrap's tmpfs, and the directories made in it belong to the sandbox's
    # uid: read-only, so that only /tmp (its own mount) can be written.
    args += ["--remount-ro", "/"]
    args += [
        "--clearenv",
        *_gpu_environment(),
        "--setenv", "PYTHONPATH", str(PROJECT_ROOT),
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", "HOME", "/tmp",
        # No /etc/passwd inside: getpass.getuser() (torch's cache paths call it on import)
        # reads these first.
        "--setenv", "USER", "sandbox", "--setenv", "LOGNAME", "sandbox",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "NASLOOP_SANDBOX_CLEAN_TMP", "1",
        "--setenv", "NASLOOP_SANDBOX_TMP_INODES", str(TMP_INODES),
        "--setenv", "NASLOOP_SANDBOX_DROP_CAPS", "0" if os.geteuid() == 0 else "1",
        "--chdir", "/tmp",
    ]  # fmt: skip
    return args


class SandboxWorker:
    """A worker process and the frames exchanged with it; one candidate at a time."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._seq = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            cwd="/tmp" if self.env is not None else None,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        frame = read_frame(self.proc.stdout.fileno()) if ready else None
        if frame is None or frame[0] != b"H":
            self.kill()
            raise SandboxError(f"sandbox worker {self.name} did not start")

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()

    def close(self, timeout_s: float = 5.0) -> None:
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # end of input: the worker exits
            self.proc.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, OSError):
            pass
        self.kill()

    def run(
        self, task: Task, data_file: Path, limits: Limits, cancelled: threading.Event
    ) -> Report:
        """Run one candidate; a dead or stuck worker is killed and answers for itself.

        A worker that is found dead without an answer is replaced and the candidate run once
        more (the worker exits by design after a /tmp it could not clean).
        """
        report = self._run_once(task, data_file, limits, cancelled)
        if report.message == WORKER_DIED and not cancelled.is_set():
            report = self._run_once(task, data_file, limits, cancelled)
        return report

    def _run_once(
        self, task: Task, data_file: Path, limits: Limits, cancelled: threading.Event
    ) -> Report:
        with self._lock:
            if not self.alive():
                self.start()
            assert self.proc is not None and self.proc.stdin and self.proc.stdout
            self._seq += 1
            req = {
                "seq": self._seq,
                "task": task.to_json(),
                "data": str(data_file),
                "limits": limits.__dict__,
            }
            try:
                write_frame(self.proc.stdin.fileno(), b"T", json.dumps(req).encode())
            except OSError:  # it exited since (e.g. after a /tmp it could not clean): once more
                self.kill()
                self.start()
                assert self.proc is not None and self.proc.stdin and self.proc.stdout
                write_frame(self.proc.stdin.fileno(), b"T", json.dumps(req).encode())
            return self._await(self._seq, limits, cancelled)

    def _await(self, seq: int, limits: Limits, cancelled: threading.Event) -> Report:
        """The answer to request ``seq``. Answers to other requests are dropped (never taken
        for this candidate's or the next one's); a malformed frame, which only a candidate that
        got at the worker's pipe could have written, is this candidate's failure."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        out = self.proc.stdout.fileno()
        backstop = time.monotonic() + 2 * limits.wall_s + BACKSTOP_S  # train, then score
        cancel_sent = False
        while True:
            if cancelled.is_set() and not cancel_sent:
                cancel_sent = True
                with contextlib.suppress(OSError):
                    write_frame(self.proc.stdin.fileno(), b"C", b"")
            if time.monotonic() > backstop:
                log.error("sandbox worker %s stopped answering; killing it", self.name)
                self.kill()
                return Report(last_stage=common.STAGE_POLICY).fail(
                    common.STATUS_WALL_TIMEOUT, "the sandbox stopped answering"
                )
            ready, _, _ = select.select([out], [], [], 0.1)
            if not ready:
                continue
            try:
                frame = read_frame(out)
            except ValueError:  # oversized: this stream can no longer be trusted
                return self._malformed("an oversized frame")
            if frame is None:
                log.error("sandbox worker %s died", self.name)
                self.kill()
                return Report(last_stage=common.STAGE_POLICY).fail(
                    common.STATUS_INTERNAL_ERROR, WORKER_DIED
                )
            kind, payload = frame
            if kind != b"R":
                continue
            if len(payload) < 8:
                return self._malformed("a truncated answer")
            if int.from_bytes(payload[:8], "big") != seq:
                log.warning("sandbox worker %s: dropped an answer to another request", self.name)
                continue
            try:
                return wire.decode(payload[8:])
            except Exception as e:  # ReportError, or whatever a hostile header still causes
                return self._malformed(f"an unreadable report ({type(e).__name__})")

    def _malformed(self, what: str) -> Report:
        self.kill()  # a fresh worker (and a fresh stream) for the next candidate
        return Report(last_stage=common.STAGE_POLICY).fail(
            common.STATUS_NO_RESULT, f"the sandbox answered with {what}"
        )


def worker_argv(strict: bool, data_dir: Path, tmp_bytes: int) -> tuple[list[str], dict | None]:
    """The worker's command line and environment (None = inherit)."""
    python = [sys.executable, "-m", "services.evaluator.worker"]
    if not strict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NASLOOP_", "AWS_"))}
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        return python, env
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError(
            "strict sandbox needs bubblewrap (apt-get install bubblewrap); "
            "set evaluator.sandbox=weak to run without it (unsafe)"
        )
    # bubblewrap (the sandbox's init process) gets only the keeper's marks (nasloop/keeper.py:
    # killing a marked bubblewrap ends the sandbox's PID namespace): nothing of the evaluator's
    # (store credentials) is in its /proc/<pid>/environ, and the worker's is cleared.
    return [*bwrap_command(bwrap, data_dir, tmp_bytes), "--", *python], keeper.marks()
