"""What of the Python installation a strict sandbox may see: torch, numpy, the standard library
and what the harness itself imports — no scikit-learn, no dataset builders, nothing else.

The virtual environment holds far more (scikit-learn bundles the digits dataset, vLLM, the
trainer's stack); a candidate that could import or read them could rebuild test labels. The
view is an allow-list of distributions and their runtime requirements, resolved from the
installed metadata, bound one top-level entry at a time over an empty ``site-packages``.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sysconfig
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

# What candidates may use (torch, numpy; torchvision where it is installed) and what the harness
# imports (protobuf for the status enums, pydantic + PyYAML for the configuration, pyseccomp).
ALLOWED = ("torch", "numpy", "torchvision", "protobuf", "pydantic", "pyyaml", "pyseccomp")
# Never, even when something above declares it.
REFUSED = frozenset({"scikit-learn", "scipy", "datasets", "torchaudio", "pandas"})


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: md.Distribution) -> list[str]:
    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


@cache
def allowed_distributions() -> tuple[md.Distribution, ...]:
    """The installed distributions of :data:`ALLOWED` and, recursively, what they require."""
    found: dict[str, md.Distribution] = {}
    todo = list(ALLOWED)
    while todo:
        name = _norm(todo.pop())
        if name in found or name in REFUSED:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # optional (torchvision on CPU) or not installed here
        found[name] = dist
        todo.extend(_requirements(dist))
    return tuple(found[k] for k in sorted(found))


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


@cache
def allowed_entries() -> tuple[Path, ...]:
    """Top-level entries of ``site-packages`` (package dirs, modules, .libs, dist-info) the
    sandbox may see."""
    root = site_packages()
    entries: set[Path] = set()
    for dist in allowed_distributions():
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
                continue
            # A namespace directory (google/) is shared with other distributions: only the
            # allowed distribution's own subdirectory is bound.
            namespace = len(parts) > 2 and not (root / parts[0] / "__init__.py").exists()
            entries.add(root.joinpath(*parts[:2]) if namespace else root / parts[0])
    return tuple(sorted(p for p in entries if p.exists()))
