"""Entry point of an evaluation pod in cluster mode: ``python -m services.evaluator.pod``.

The pod holds no credentials. It reads three presigned URLs from its environment (task JSON,
sandbox dataset, report upload), downloads the task and the data, runs the candidate in a
separate step — a fresh interpreter (``--run TASK DATA``) started without the URLs, which forks
the confined child — and, once that has exited, uploads the encoded report. A fork of this
process would carry the URLs (its initial environment, its variables) into the candidate's
memory; the fresh interpreter never had them. The exit code says whether the pod's own plumbing
worked; what the candidate did is in the report. When the plumbing fails the pod still tries to
upload a report saying so (``STATUS_INTERNAL_ERROR``), so the evaluator can tell "our fault"
from "the candidate's fault".
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nasloop.config import EvaluatorConfig, load_config
from nasloop.v1 import common_pb2 as common
from services.evaluator import report as wire
from services.evaluator.kube.manifests import ENV_DATA_URL, ENV_RESULT_URL, ENV_TASK_URL
from services.evaluator.report import Report
from services.evaluator.task import Task

T = TypeVar("T")

EXIT_OK = 0
EXIT_USAGE = 2  # the pod's environment lacks a URL
EXIT_DOWNLOAD = 3  # the task or the dataset could not be fetched or parsed
EXIT_RUN = 4  # loading the data or running the sandbox failed (not the candidate's doing)
EXIT_UPLOAD = 5  # the report could not be uploaded

SETTINGS_PREFIX = "NASLOOP_EVALUATOR__"
HTTP_TIMEOUT_S = 60.0
ATTEMPTS = 4
MAX_TASK_BYTES = 16 << 20
PR_SET_DUMPABLE = 4


class PlumbingError(RuntimeError):
    """The pod could not do its own part (download, upload, load); carries the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _retry(what: str, fn: Callable[[], T]) -> T:
    """Retry network errors and HTTP 5xx with backoff; a 4xx (expired URL...) fails at once."""
    attempts, delay = ATTEMPTS, 0.5
    for attempt in range(attempts):
        try:
            return fn()
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt + 1 == attempts:
                raise OSError(f"{what}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            if attempt + 1 == attempts:
                raise OSError(f"{what}: {e}") from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def http_get(url: str, dest: Path | None = None, max_bytes: int | None = None) -> bytes:
    """GET ``url``; into ``dest`` when given (streamed, returns b"") else into memory."""

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            if dest is None:
                data = resp.read(max_bytes + 1 if max_bytes else -1)
                if max_bytes and len(data) > max_bytes:
                    raise ValueError(f"object larger than {max_bytes} bytes")
                return data
            with open(dest, "wb") as f:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
            return b""

    return _retry("download", fetch)


def http_put(url: str, data: bytes) -> None:
    def put() -> None:
        req = urllib.request.Request(
            url,
            data=data,
            method="PUT",
            # The presigned PUT is checked against this content type by some S3 servers.
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            resp.read()

    _retry("upload", put)


def evaluator_settings(env: dict[str, str]) -> EvaluatorConfig:
    """The evaluator's sandbox settings forwarded by the launcher as NASLOOP_EVALUATOR__*."""
    only = {k: v for k, v in env.items() if k.startswith(SETTINGS_PREFIX)}
    return load_config(env=only).evaluator


RUN_FLAG = "--run"
RUNNER_MARGIN_S = 300.0  # the runner's own start (torch import) and clean-up, beyond the limit


def run_sandbox(task: Task, task_path: Path, data_path: Path, env: dict[str, str]) -> Report:
    """The separate step: ``--run`` in a fresh interpreter whose environment has no URLs; its
    stdout carries only the encoded report."""
    clean = {k: v for k, v in env.items() if k not in (ENV_TASK_URL, ENV_DATA_URL, ENV_RESULT_URL)}
    argv = [
        sys.executable,
        "-m",
        "services.evaluator.pod",
        RUN_FLAG,
        str(task_path),
        str(data_path),
    ]
    proc = subprocess.run(
        argv,
        env=clean,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        timeout=2 * task.protocol.time_limit_s + RUNNER_MARGIN_S,  # train, then score
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the sandbox runner exited with code {proc.returncode}")
    return wire.decode(proc.stdout)


def runner_main(task_path: Path, data_path: Path) -> int:
    """``--run``: evaluate and write the encoded report to stdout (nothing else goes there)."""
    from services.evaluator.private import scrub_freed_memory

    _not_dumpable()
    scrub_freed_memory()  # no freed copy of the data in the heap a candidate process inherits
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    task = Task.from_json(task_path.read_bytes())
    task_path.unlink()  # nothing of the pod's own stays where a candidate process can write
    report = evaluate(task, data_path, dict(os.environ))
    with os.fdopen(out, "wb") as f:
        f.write(wire.encode(report))
    return EXIT_OK


# What a candidate process of the pod can write; emptied after each (train, each score chunk)
# where it could not mount a /tmp of its own (no user namespaces in the pod).
SCRUBBED = ("/tmp", "/dev/shm")


def evaluate(task: Task, data_path: Path, env: dict[str, str]) -> Report:
    """Load the sandbox data and run the candidate confined; the pod itself is non-root.

    The data is held where no forked child sees it, and its file removed before any candidate
    process starts: as in the local sandbox, the build phase has no dataset in its view."""
    from services.evaluator.confine import limits_for, run_confined
    from services.evaluator.datasets import SandboxData
    from services.evaluator.private import private_data

    # CPU tensors: CUDA must not be initialised in this process before the sandbox child is
    # forked; the child puts the data on task.protocol.device.
    data = private_data(SandboxData.load(data_path, device="cpu"))
    data_path.unlink()
    cfg = evaluator_settings(env)
    limits = limits_for(task, cfg, uid=None, seccomp=True, scrub_dirs=SCRUBBED)
    return run_confined(task, data, limits)


def internal_error(message: str) -> Report:
    return Report(last_stage=common.STAGE_POLICY).fail(common.STATUS_INTERNAL_ERROR, message)


def run(env: dict[str, str], workdir: Path) -> int:
    task_url, data_url = env.get(ENV_TASK_URL), env.get(ENV_DATA_URL)
    result_url = env.get(ENV_RESULT_URL)
    try:
        if not (task_url and data_url and result_url):
            raise PlumbingError(
                EXIT_USAGE, f"{ENV_TASK_URL}, {ENV_DATA_URL} and {ENV_RESULT_URL} must be set"
            )
        try:
            raw_task = http_get(task_url, max_bytes=MAX_TASK_BYTES)
            task = Task.from_json(raw_task)
            task_path, data_path = workdir / "task.json", workdir / "sandbox.npz"
            task_path.write_bytes(raw_task)
            http_get(data_url, dest=data_path)
        except (OSError, ValueError, TypeError) as e:
            raise PlumbingError(EXIT_DOWNLOAD, f"pod could not fetch its inputs: {e}") from e
        try:
            report = run_sandbox(task, task_path, data_path, env)
        except Exception as e:
            raise PlumbingError(
                EXIT_RUN, f"pod could not run the sandbox: {type(e).__name__}: {e}"
            ) from e
    except PlumbingError as e:
        print(f"nasloop pod: {e}", file=sys.stderr)
        if result_url:
            try:
                http_put(result_url, wire.encode(internal_error(str(e))))
            except OSError as up:
                print(f"nasloop pod: could not upload the error report: {up}", file=sys.stderr)
        return e.code

    # The candidate's process held copies of the URLs in memory: keep them out of its output and
    # message, which reach logs and records (a leaked result URL could overwrite the report).
    for url in (task_url, data_url, result_url):
        for part in (url, url.split("?", 1)[-1]):
            report.output_tail = report.output_tail.replace(part, "[redacted]")
            report.message = report.message.replace(part, "[redacted]")
    # The report carries the output tail; it goes to the pod log too, for `kubectl logs`.
    if report.output_tail:
        sys.stdout.write(report.output_tail.rstrip("\n") + "\n")
    try:
        http_put(result_url, wire.encode(report))
    except OSError as e:
        print(f"nasloop pod: could not upload the report: {e}", file=sys.stderr)
        return EXIT_UPLOAD
    print(
        f"nasloop pod: {task.candidate_id}: stage {report.last_stage}, status {report.status}",
        file=sys.stderr,
    )
    return EXIT_OK


def _not_dumpable() -> None:
    """Make this process's /proc files (environ, mem) unreadable to its own uid.

    The candidate's child runs under the same uid; unsetting variables does not erase them from
    /proc/<pid>/environ, which the child could otherwise read to find the result URL.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError) as e:  # not Linux: nothing to protect against here
        print(f"nasloop pod: prctl(PR_SET_DUMPABLE) unavailable: {e}", file=sys.stderr)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == RUN_FLAG:
        return runner_main(Path(sys.argv[2]), Path(sys.argv[3]))
    env = dict(os.environ)
    # The candidate runs in a child of this process: it must not inherit the URLs (with the
    # result URL it could overwrite the report after this process wrote it).
    for key in (ENV_TASK_URL, ENV_DATA_URL, ENV_RESULT_URL):
        os.environ.pop(key, None)
    _not_dumpable()
    # The runner removes the task and data files once it has loaded them.
    with tempfile.TemporaryDirectory(prefix="nasloop-pod-", ignore_cleanup_errors=True) as workdir:
        return run(env, Path(workdir))


if __name__ == "__main__":
    sys.exit(main())
