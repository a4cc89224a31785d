"""Nothing outlives ``nasloop run`` or ``nasloop serve <service>``, however it is stopped:
SIGKILL to its whole process group or to it alone, SIGTERM to it, or Ctrl-C twice (SIGINT to
its group).

The command is started as a shell starts a job (a process group of its own) with a marker
variable in its environment; every process it starts inherits it, whatever it is renamed to
(vLLM's ``VLLM::EngineCore``), and is found by it in ``/proc/<pid>/environ``. The marker's name
has the keeper's prefix, so the evaluator's bubblewrap carries it as well. Everything is real:
the loop's tiny model served by vLLM, the strict sandbox, moto's S3; the command is stopped once
its vLLM engine is up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import procs
import pytest
from loop_world import SPEC_OVERRIDES, LoopWorld, build_loop_world

from nasloop import keeper, layout
from services.local import LocalService, free_port, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
VLLM = {"NASLOOP_GENERATOR__BACKEND": "vllm", "NASLOOP_GENERATOR__KV_CACHE_GIB": "1"}


def _stop_group(signum: int, times: int = 1) -> Callable[[subprocess.Popen], None]:
    def stop(proc: subprocess.Popen) -> None:
        for i in range(times):
            if i:
                time.sleep(1)
            os.killpg(proc.pid, signum)

    return stop


STOPS: dict[str, Callable[[subprocess.Popen], None]] = {
    "sigkill-group": _stop_group(signal.SIGKILL),
    "sigkill": lambda proc: proc.send_signal(signal.SIGKILL),  # as the OOM killer does
    "sigterm": lambda proc: proc.send_signal(signal.SIGTERM),
    "sigint-twice": _stop_group(signal.SIGINT, times=2),  # Ctrl-C twice in a terminal
}


class Marked:
    """The processes that carry one marker variable."""

    def __init__(self) -> None:
        self.variable = f"{keeper.PREFIX}TEST{secrets.token_hex(8)}"

    def alive(self) -> dict[int, str]:
        return procs.marked(self.variable)

    def kill_all(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def world(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> LoopWorld:
    return build_loop_world(s3_endpoint, tmp_path_factory.mktemp("cleanup"))


@pytest.fixture
def marked() -> Iterator[Marked]:
    m = Marked()
    yield m
    m.kill_all()  # a failing test leaves nothing behind either


def _start(
    command: list[str], env: dict[str, str], cwd: Path, marked: Marked, log: Path
) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env, marked.variable: "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as a shell starts a job: a process group of its own
        )


def _engine(processes: dict[int, str]) -> bool:
    return any("EngineCore" in cmdline for cmdline in processes.values())


def _stop_and_check(proc: subprocess.Popen, stop: str, marked: Marked) -> None:
    try:
        STOPS[stop](proc)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while marked.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marked.alive() == {}, f"left running after {stop}"


def _wait(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f"the command exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("stop", ["sigkill-group", "sigterm", "sigint-twice"])
def test_nothing_outlives_nasloop_run(
    world: LoopWorld, tmp_path: Path, marked: Marked, stop: str
) -> None:
    run = f"cleanup-{stop}"
    sets = [a for s in [*SPEC_OVERRIDES, "cycles=1"] for a in ("--set", s)]
    command = [sys.executable, "-m", "services.cli", "run", "--name", run, "--no-baseline", *sets]
    proc = _start(command, {**world.env, **VLLM}, tmp_path, marked, tmp_path / "run.log")
    # The run's state is written once every service serves: the generator's engine is up.
    _wait(lambda: world.store.exists(layout.state_key(run)), proc, "the run to start")
    running = marked.alive()
    assert _engine(running), running  # vLLM's engine process, under its own name
    _stop_and_check(proc, stop, marked)
    # The sandbox's bubblewrap processes were among those checked.
    assert any(Path(cmd.split()[0]).name == "bwrap" for cmd in running.values()), running


@pytest.mark.parametrize(
    ("service", "stop"),
    [("controller", s) for s in ("sigkill-group", "sigterm", "sigint-twice")]
    + [("generator", "sigkill")],
)
def test_nothing_outlives_nasloop_serve(
    world: LoopWorld, tmp_path: Path, marked: Marked, service: str, stop: str
) -> None:
    """The controller runs cycles in its own process (local mode). The generator starts vLLM's
    engine in its own process group: a SIGKILL to the group would reach it anyway, a SIGKILL to
    the generator alone (the OOM killer's) does not."""
    port = free_port()
    command = [sys.executable, "-m", "services.cli", "serve", service, "--port", str(port)]
    # The controller gets a store of its own: it would resume the runs stopped above.
    own = {"NASLOOP_STORE__URL": f"file://{tmp_path / 'store'}"}
    env = {**world.env, **(VLLM if service == "generator" else own)}
    log = tmp_path / f"{service}.log"
    proc = _start(command, env, ROOT, marked, log)
    wait_ready(LocalService(service, proc, f"127.0.0.1:{port}", log), 300)
    if service == "generator":
        assert _engine(marked.alive())
    _stop_and_check(proc, stop, marked)
