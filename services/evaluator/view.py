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
from collections.abc import Callable
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


def _requirements(dist: md.Distribution, extra: str) -> list[tuple[str, str]]:
    """What ``dist`` requires when installed with ``extra`` ("" = none): (name, extra) pairs,
    one per extra the requirement asks of it (so CUDA torch's ``cuda-toolkit[cublas,…]`` brings
    the nvidia-* libraries that only those extras of cuda-toolkit declare)."""
    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            out += [(req.name, e) for e in ("", *sorted(req.extras))]
    return out


def closure(
    roots: tuple[str, ...], find: Callable[[str], md.Distribution]
) -> list[md.Distribution]:
    """``roots`` and, recursively, what they require with the extras asked of them, as ``find``
    (a name → distribution lookup raising PackageNotFoundError) resolves them; :data:`REFUSED`
    never, and a name not installed is passed over."""
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(name, "") for name in roots]
    while todo:
        name, extra = todo.pop()
        name, extra = _norm(name), _norm(extra)
        if (name, extra) in seen or name in REFUSED:
            continue
        seen.add((name, extra))
        if name not in found:
            try:
                found[name] = find(name)
            except md.PackageNotFoundError:
                continue  # optional (torchvision on CPU) or not installed here
        todo.extend(_requirements(found[name], extra))
    return [found[k] for k in sorted(found)]


@cache
def allowed_distributions() -> tuple[md.Distribution, ...]:
    """The installed distributions of :data:`ALLOWED` and, recursively, what they require with
    the extras asked of them."""
    return tuple(closure(ALLOWED, md.distribution))


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def entries_of(dist: md.Distribution) -> set[Path]:
    """Top-level entries of the directory ``dist`` is installed in (package dirs, modules,
    .libs, its metadata directory) that belong to it; a namespace directory (google/) shared
    with other distributions counts only with the distribution's own subdirectory.

    The directory is the distribution's own: the virtual environment's ``site-packages``, or a
    system directory (Debian's ``/usr/lib/python3/dist-packages``) when the environment sees
    the system's packages. A Debian egg-info lists no files: its ``top_level.txt`` names them.
    """
    root = Path(str(dist.locate_file("")))
    entries: set[Path] = set()
    meta = getattr(dist, "_path", None)  # the .dist-info / .egg-info itself
    if isinstance(meta, Path) and meta.parent == root:
        entries.add(meta)
    files = dist.files
    if files is None:
        for name in (dist.read_text("top_level.txt") or "").split():
            entries.update([root / name, root / f"{name}.py", *root.glob(f"{name}.*.so")])
    for f in files or []:
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        namespace = len(parts) > 2 and not (root / parts[0] / "__init__.py").exists()
        entries.add(root.joinpath(*parts[:2]) if namespace else root / parts[0])
    return {p for p in entries if p.exists()}


@cache
def allowed_entries() -> tuple[Path, ...]:
    """What the sandbox may see of the directories packages are installed in: the entries of
    the allowed distributions (:func:`entries_of`), wherever each is installed."""
    entries: set[Path] = set()
    for dist in allowed_distributions():
        entries |= entries_of(dist)
    return tuple(sorted(entries))
