"""Services as real processes on loopback sockets, for the integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.local import start_service, wait_ready

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    proc: subprocess.Popen
    address: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@contextmanager
def service_server(
    service: str, env: dict[str, str], log: Path, timeout_s: float = 60
) -> Iterator[Server]:
    """``nasloop serve <service>`` on a free loopback port, SERVING before it is yielded."""
    started = start_service(service, env, log, cwd=ROOT)  # in its own process group
    server = Server(started.proc, started.address, log)
    try:
        wait_ready(started, timeout_s)
        yield server
    finally:
        if started.proc.poll() is None:
            os.killpg(started.proc.pid, signal.SIGKILL)
            started.proc.wait()


def novelty_server(env: dict[str, str], log: Path, timeout_s: float = 60):  # type: ignore[no-untyped-def]
    return service_server("novelty", env, log, timeout_s)


GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(server: Server, *args: str, data: dict | None = None, timeout: float = 30) -> str:
    """Run grpcurl against the server, through reflection only; its stdout."""
    assert GRPCURL is not None, "grpcurl is not installed (the dev extra ships it)"
    cmd = [GRPCURL, "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    out = subprocess.run(
        [*cmd, server.address, *args], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def json_stream(text: str) -> list[dict]:
    """The JSON objects grpcurl prints for a streaming call, one after another."""
    decoder, items, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        item, i = decoder.raw_decode(text, i)
        items.append(item)
    return items
