"""Processes as /proc shows them: for the tests of what outlives a command."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def marked(variable: str) -> dict[int, str]:
    """pid -> command line of every running process started with ``variable`` in its
    environment (which every process a command starts inherits, whatever it renames itself to)."""
    needle = b"\0" + variable.encode() + b"="
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in b"\0" + (entry / "environ").read_bytes():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            cmdline = cmdline or (entry / "comm").read_text().strip()
        except OSError:
            continue
        if alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found
