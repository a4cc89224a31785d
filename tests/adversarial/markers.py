"""Secrets planted where a candidate would look for them, so that the cases that look can fail.

Each marker is a world-readable file holding a known value: only the sandbox's view can keep it
from a candidate, so a case that prints it (and the suite checks its output for the value) tests
the sandbox and nothing else. The suite places them where it can (``place``); ``make
test-nonroot`` places them as root before it drops to an unprivileged uid, and removes them
after (``python tests/adversarial/markers.py place|remove``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Marker:
    name: str
    path: Path
    value: str
    # The directory placing it created (removed with it); None: the file's own directory existed.
    top: Path | None = None

    def present(self) -> bool:
        try:
            return self.path.read_text() == self.value
        except OSError:
            return False


PROJECT = Marker("project", CHECKOUT / ".adversarial-canary", "canary-7b1f0c")
# A Kubernetes service-account token, where a pod has one (never on this machine otherwise).
TOKEN = Marker(
    "token",
    Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    "token-canary-41c9e2",
    top=Path("/var/run/secrets"),
)
MARKERS = (PROJECT, TOKEN)


def place(m: Marker) -> bool:
    """Write ``m`` (world-readable) unless it is there already; True when this call wrote it
    (the caller then removes it). A marker that cannot be placed stays absent."""
    if m.present():
        return False
    if m.top is not None and m.top.exists():
        return False  # a real one (in a pod): never touched
    try:
        for d in reversed(m.path.parents):
            if m.top is not None and (d == m.top or m.top in d.parents) and not d.exists():
                d.mkdir(mode=0o755)
        m.path.write_text(m.value)
        m.path.chmod(0o644)
    except OSError:
        remove(m)
        return False
    return True


def remove(m: Marker) -> None:
    import shutil

    if m.top is not None:
        shutil.rmtree(m.top, ignore_errors=True)
    else:
        m.path.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if argv == ["place"]:
        for m in MARKERS:
            place(m)
        return 0
    if argv == ["remove"]:
        for m in MARKERS:
            if m.present():
                remove(m)
        return 0
    print("usage: markers.py place|remove", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
