"""Services as child processes on loopback: how ``nasloop run`` works without a cluster.

Each service is ``python -m nasloop serve <service>`` on a free port, in its own process group
(stopping it reaches the engine and sandbox processes it started), logging to a file, and
bound to its parent: if the parent dies, even by SIGKILL, the kernel kills the service
(``PR_SET_PDEATHSIG``), and each service's own children die with their process group.
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
            [sys.executable, "-m", "nasloop", "serve", name, "--port", str(port)],
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
