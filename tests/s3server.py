"""A real S3 endpoint on loopback for tests: moto's standalone server in a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from services.local import free_port


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/moto-api/")
        return conn.getresponse().status < 500
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_s3_server(
    port: int | None = None, timeout_s: float = 30.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``python -m moto.server`` on 127.0.0.1 and yield its endpoint ``"127.0.0.1:PORT"``;
    ``env`` adds to its environment (moto's settings).

    Without ``port`` a free one is picked (and another tried if that one gets taken before the
    server binds it). The server is terminated, then killed, on exit. Its log (one line per
    request) goes to a temporary file, never to a pipe that nobody drains.
    """
    attempts = 1 if port is not None else 3
    with tempfile.TemporaryFile() as log:
        for attempt in range(attempts):
            p = port if port is not None else free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p)],
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + timeout_s
                while proc.poll() is None and not _answers(p):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"moto server did not answer on port {p}")
                    time.sleep(0.05)
                if proc.poll() is not None:
                    if attempt + 1 < attempts:
                        continue  # most likely the port was taken meanwhile
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"moto server exited with {proc.returncode}:\n{output}")
                yield f"127.0.0.1:{p}"
                return
            finally:
                _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def store_env(endpoint: str, url: str) -> dict[str, str]:
    """The ``NASLOOP_STORE__*`` variables that point a service at this S3 server."""
    return {
        "NASLOOP_STORE__URL": url,
        "NASLOOP_STORE__ENDPOINT": endpoint,
        "NASLOOP_STORE__ACCESS_KEY": "testing",
        "NASLOOP_STORE__SECRET_KEY": "testing",
        "NASLOOP_STORE__REGION": "us-east-1",
    }
