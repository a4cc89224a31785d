"""The keeper (nasloop/keeper.py) on plain processes: a command that starts it, then processes
that leave its process group and session, one that starts with an empty environment below a
marked parent, is SIGKILLed with its whole group; none of them may be left, and a process the
command did not start is untouched. The end-to-end checks with vLLM are in
tests/integration/test_process_cleanup.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from procs import alive, marked

ROOT = Path(__file__).resolve().parents[2]

COMMAND = textwrap.dedent(
    """
    import subprocess, sys, time
    from nasloop import keeper

    keeper.start()
    # a marked process in a session of its own, with a child whose environment is empty
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "p = subprocess.Popen(['sleep', '300'], env={}); print(p.pid, flush=True); "
         "time.sleep(300)"],
        stdout=subprocess.PIPE, start_new_session=True,
    )
    unmarked = parent.stdout.readline().decode().strip()
    # started by a process that exits at once, in a session of its own: reparented to init
    escaped = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen("
         "[sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True, "
         "stdout=subprocess.DEVNULL).pid)"],
        stdout=subprocess.PIPE, check=True,
    ).stdout.decode().strip()
    print(parent.pid, unmarked, escaped, flush=True)
    time.sleep(300)
    """
)


def test_nothing_the_command_started_survives_a_sigkill_to_its_group() -> None:
    variable = f"KEEPER_TEST_{os.getpid()}_{time.monotonic_ns()}"
    bystander = subprocess.Popen(["sleep", "300"])  # not the command's
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND],
        cwd=ROOT,
        env={**os.environ, variable: "1"},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    started = []
    try:
        assert command.stdout is not None
        started = [int(pid) for pid in command.stdout.readline().split()]
        started += [p for p in marked(variable) if p not in started]  # the command itself
        assert len(started) >= 4, started
        os.killpg(command.pid, signal.SIGKILL)
        command.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in started if alive(p)] == []
        assert alive(bystander.pid)
    finally:
        for pid in [*started, command.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        bystander.kill()
        bystander.wait()
