"""Print the requirements of nasloop's core and the named extras, one per line (for image builds).

``python3 requirements.py pyproject.toml evaluator trainer`` → the core dependencies plus those
of the ``evaluator`` and ``trainer`` extras, with self-references (``nasloop[x]``) expanded and
environment markers kept (pip evaluates them). Options before the extras: ``--only NAME`` keeps
the requirements on these distributions alone (repeatable), ``--add REQ`` appends a requirement
(repeatable): ``--only torch --add torchvision==0.28.0 evaluator`` → the evaluator's torch pin
and the torchvision built for it, to be installed by one pip command. ``--view FILE`` keeps the
requirements on the distributions that FILE's ``ALLOWED`` tuple names (services/evaluator/view.py:
what the strict sandbox lets a candidate import), those the extras do not name left out (the
evaluation pod's environment, which then holds nothing else). Standard library only: it
runs in the image's build stage before anything is installed, so the dependency layers are cached
on pyproject.toml alone and rebuilt only when it changes.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*\[([^\]]+)\]\s*$")
_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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


def select(reqs: list[str], only: list[str], add: list[str]) -> list[str]:
    """The requirements on the distributions in ``only`` (all when empty), then ``add``."""
    if only:
        wanted = {canonical(n) for n in only}
        names = {r: canonical(m.group(1)) if (m := _NAME.match(r)) else "" for r in reqs}
        kept = [r for r in reqs if names[r] in wanted]
        if missing := wanted - {names[r] for r in kept}:
            raise SystemExit(f"no requirement on {sorted(missing)} in these extras")
        reqs = kept
    return reqs + [r for r in add if r not in reqs]


def allowed_names(view: Path) -> list[str]:
    """The names in the module-level ``ALLOWED = (...)`` of ``view`` (read, not imported)."""
    for node in ast.parse(view.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["ALLOWED"]
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            return [ast.literal_eval(e) for e in node.value.elts]
    raise SystemExit(f"{view}: no ALLOWED tuple of distribution names")


def in_view(reqs: list[str], view: Path) -> list[str]:
    """The requirements on the distributions that ``view`` allows."""
    allowed = {canonical(n) for n in allowed_names(view)}
    return [r for r in reqs if (m := _NAME.match(r)) and canonical(m.group(1)) in allowed]


def main(argv: list[str]) -> list[str]:
    usage = (
        "usage: requirements.py PYPROJECT [--only NAME]... [--view FILE] [--add REQ]... [EXTRA ...]"
    )
    if not argv:
        raise SystemExit(usage)
    pyproject, rest = Path(argv[0]), argv[1:]
    only: list[str] = []
    add: list[str] = []
    view: Path | None = None
    while rest and rest[0] in ("--only", "--add", "--view"):
        if len(rest) < 2:
            raise SystemExit(usage)
        if rest[0] == "--view":
            view = Path(rest[1])
        else:
            (only if rest[0] == "--only" else add).append(rest[1])
        rest = rest[2:]
    reqs = requirements(pyproject, rest)
    if view is not None:
        reqs = in_view(reqs, view)
    return select(reqs, only, add)


if __name__ == "__main__":
    print("\n".join(main(sys.argv[1:])))
