"""The keeper: once a command has ended, in any way, no process it started is left running.

``start()`` (in the command, first thing) starts the keeper and marks the command's environment;
``main()`` is the keeper. Why this holds is in ``services/local.py``. The keeper is run as
``python -I -S keeper.py VARIABLE`` and imports only the standard library, so it starts in
milliseconds and holds about 9 MB.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

PREFIX = "NASLOOPKEEP_"  # not NASLOOP_: the weak sandbox strips those from its workers' env


def start() -> str:
    """Start this command's keeper; returns the variable that marks the command's processes.

    The keeper reads a pipe whose only writer is this process: its end comes when this process
    ends (a forked child closes its copy at once; ``exec`` closes it anyway). From then on every
    process the keeper finds marked, and every descendant of one, is stopped and killed.
    """
    import secrets
    import subprocess  # here, not at the top: the keeper itself needs neither

    variable = PREFIX + secrets.token_hex(16)
    read, write = os.pipe()  # both non-inheritable
    subprocess.run(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), variable],
        stdin=read,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # out of reach of a signal to this command's process group
        env=marks(),  # an outer command's marks (its keeper stops this one too), nothing else
        check=True,  # returns once the keeper has forked itself away (not this one's child)
    )
    os.close(read)
    os.register_at_fork(after_in_child=lambda: _close(write))
    os.environ[variable] = str(os.getpid())  # inherited by every process started from now on
    return variable


def marks() -> dict[str, str]:
    """The variables that mark this process's commands: for a child started with an environment
    of its own."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _processes() -> dict[int, tuple[int, int]]:
    """Every visible process: pid -> (parent pid, start time)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                found[int(name)] = stat
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _marked(pid: int, needle: bytes) -> bool:
    """Whether the process started with the variable (its initial environment, which a later
    ``unsetenv``/``clearenv`` in the process does not change). Unreadable: not marked."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in b"\0" + f.read()
    except OSError:
        return False


def _targets(needle: bytes, me: int) -> dict[int, int]:
    """The marked processes and all their descendants (pid -> start time), never this one."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid in procs if pid != me and _marked(pid, needle)]
    found: dict[int, int] = {}
    while todo:
        pid = todo.pop()
        if pid not in found and pid != me:
            found[pid] = procs[pid][1]
            todo.extend(children.get(pid, ()))
    return found


def sweep(variable: str) -> int:
    """Stop every target (a stopped process starts nothing), look again until no new one is
    found, then kill them all; returns how many were killed."""
    needle = b"\0" + variable.encode() + b"="
    me = os.getpid()
    # (pid, start time) -> pidfd, or -1 where it was gone: a signal never reaches a reused pid
    held: dict[tuple[int, int], int] = {}
    while True:
        new = [p for p in _targets(needle, me).items() if p not in held]
        if not new:
            break
        for pid, started in new:
            held[pid, started] = fd = _open(pid, started)
            if fd >= 0:
                _signal(fd, signal.SIGSTOP)
    for fd in held.values():
        if fd >= 0:
            _signal(fd, signal.SIGKILL)
            os.close(fd)
    return sum(fd >= 0 for fd in held.values())


def _open(pid: int, started: int) -> int:
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone already
        return -1
    stat = _stat(pid)
    if stat is None or stat[1] != started:  # it died, and the pid was taken since
        os.close(fd)
        return -1
    return fd


def _signal(fd: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        signal.pidfd_send_signal(fd, signum)


def main(variable: str) -> None:
    if os.fork():  # the keeper is not the command's child: the command waits for none
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while os.read(0, 4096):  # nothing is ever written: this returns at the end
            pass
    sweep(variable)


if __name__ == "__main__":
    main(sys.argv[1])
