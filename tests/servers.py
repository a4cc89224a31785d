"""Services as real processes on loopback sockets, for the integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s3server import free_port

from nasloop.rpc import connect, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    proc: subprocess.Popen
    address: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


SERVICE_NAMES = {
    "novelty": "nasloop.v1.Novelty",
    "generator": "nasloop.v1.Generator",
    "evaluator": "nasloop.v1.Evaluator",
    "trainer": "nasloop.v1.Trainer",
}


@contextmanager
def service_server(
    service: str, env: dict[str, str], log: Path, timeout_s: float = 60
) -> Iterator[Server]:
    """``nasloop serve <service>`` on a free loopback port, SERVING before it is yielded."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nasloop", "serve", service, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill reaches its children too
        )
    server = Server(proc, f"127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout_s
        with connect(server.address) as ch:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}; see {log}")
                try:
                    wait_until_serving(ch, SERVICE_NAMES[service], timeout_s=2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
