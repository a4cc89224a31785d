"""Print the requirements of nasloop's core and the named extras, one per line (for image builds).

``python3 requirements.py pyproject.toml evaluator trainer`` → the core dependencies plus those
of the ``evaluator`` and ``trainer`` extras, with self-references (``nasloop[x]``) expanded and
environment markers kept (pip evaluates them). Standard library only: it runs in the image's
build stage before anything is installed, so the dependency layers are cached on pyproject.toml
alone and rebuilt only when it changes.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*\[([^\]]+)\]\s*$")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    name, optional = project["name"], project.get("optional-dependencies", {})
    out: list[str] = list(project["dependencies"])
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no extra named {extra!r} (have: {sorted(optional)})")
        seen.add(extra)
        for req in optional[extra]:
            m = _SELF.match(req)
            if m and m.group(1) == name:
                todo.extend(x.strip() for x in m.group(2).split(","))
            elif req not in out:
                out.append(req)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: requirements.py PYPROJECT [EXTRA ...]")
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
