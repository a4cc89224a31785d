"""Services as child processes on loopback: how ``nasloop run`` works without a cluster.

Each service is ``python -m services.cli serve <service>`` on a free port, in its own process group,
logging to a file. Stopping one sends SIGTERM, then SIGKILL to its process group.

Nothing outlives the command (``nasloop run``, ``nasloop serve <service>``), however it ends:
normally, Ctrl-C once or twice, SIGTERM, or SIGKILL (``kill -9``, the OOM killer, a closed
terminal). Death signals alone cannot promise that: ``PR_SET_PDEATHSIG`` reaches only a direct
child, and the processes a library starts (vLLM's engine core and workers, torch's compile
workers, the evaluator's sandbox workers) are grandchildren in sessions and groups of their own,
which nothing kills when their parent is SIGKILLed. So each command starts a *keeper* first
(``nasloop/keeper.py``). Why that holds:

* The keeper runs in a session of its own, so a signal to the command's process group (Ctrl-C,
  ``kill -- -PGID``) does not reach it, and it needs no cooperation from the command to act: it
  waits for the end of a pipe whose only writer is the command (the end is non-inheritable, and
  a child forked without ``exec`` closes its copy at once). The kernel closes it when the
  command ends in any way, SIGKILL included.
* The command puts a variable unique to it in its own environment before it starts anything;
  every process started from then on inherits it, whatever its session, group or parent. The
  keeper reads it from ``/proc/<pid>/environ`` — the environment a process was started with,
  which a later ``unsetenv``/``clearenv`` in that process does not change. The keeper has the
  command's uid, so it can read it for a non-root run too (for a process that made itself
  undumpable only root can: the sandbox worker, which is covered below).
* Its targets are the marked processes and every descendant of one, so a child started with an
  environment of its own is found while its parent lives. The evaluator's bubblewrap, whose
  parent may die first, gets the marks in its otherwise empty environment
  (``services/evaluator/sandbox.py``). The keeper stops every target (a stopped process starts
  nothing), looks again until it finds no new one, then kills them all. Signals go through
  pidfds checked against each process's start time, so a reused pid is never hit.
* A sandboxed candidate and its worker have a cleared environment, but they run inside
  bubblewrap's PID namespace: when the marked bubblewrap (the namespace's init) is killed, the
  kernel kills everything in it. (In the weak sandbox the worker keeps the marks and exits at
  the end of its input, stopping its candidate.)

What escapes it is only a process that both starts with a new environment and loses every
marked ancestor before the keeper looks; none of the project's processes or libraries does.
``PR_SET_PDEATHSIG`` stays on each service as a second line: a service dies with its command
even if its keeper were killed.

Weighed and not chosen: ``PR_SET_CHILD_SUBREAPER`` (the reaper must be an ancestor of every
process, i.e. the command's parent: the user's shell); vLLM's engine in the generator's process
(covers only vLLM, not torch's compile workers or the sandbox, and puts the engine's busy loop
under the gRPC server's GIL); cgroups (need root or a delegated cgroup v2 subtree, which a
laptop run or a container often lacks).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from nasloop.rpc import connect, wait_until_serving

SERVICES = ("novelty", "evaluator", "trainer", "generator")
FULL_NAMES = {
    "novelty": "nasloop.v1.Novelty",
    "generator": "nasloop.v1.Generator",
    "evaluator": "nasloop.v1.Evaluator",
    "trainer": "nasloop.v1.Trainer",
    "controller": "nasloop.v1.Controller",
}
_PR_SET_PDEATHSIG = 1


class ServiceFailed(RuntimeError):
    """A service exited or did not become ready; the message names its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class LocalService:
    name: str
    proc: subprocess.Popen
    address: str
    log: Path

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL to the whole group after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its engine/sandbox children too
        return self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(
    name: str, env: Mapping[str, str], log: Path, cwd: str | Path | None = None
) -> LocalService:
    """Start ``nasloop serve <name>`` on a free loopback port (not yet waited for)."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name, "--port", str(port)],
            cwd=cwd,
            env={**os.environ, "NASLOOP_SERVER__HOST": "127.0.0.1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    return LocalService(name, proc, f"127.0.0.1:{port}", log)


def wait_ready(service: LocalService, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with connect(service.address) as channel:
        while True:
            if service.proc.poll() is not None:
                raise ServiceFailed(
                    f"{service.name} exited with {service.proc.returncode}; its log "
                    f"({service.log}) ends:\n{service.tail()}"
                )
            try:
                wait_until_serving(channel, FULL_NAMES[service.name], timeout_s=2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise ServiceFailed(
                        f"{service.name} not ready after {timeout_s:.0f} s; see {service.log}"
                    ) from None


@contextmanager
def local_services(
    env: Mapping[str, str],
    log_dir: Path,
    names: tuple[str, ...] = SERVICES,
    per_service_env: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 600.0,
) -> Iterator[dict[str, LocalService]]:
    """Start ``names`` together, wait until all serve, stop them all on exit."""
    per_service_env = per_service_env or {}
    with ExitStack() as stack:
        started: dict[str, LocalService] = {}
        for name in names:
            s = start_service(
                name, {**env, **per_service_env.get(name, {})}, log_dir / f"{name}.log"
            )
            stack.callback(s.stop)
            started[name] = s
        for s in started.values():
            wait_ready(s, timeout_s)
        yield started
