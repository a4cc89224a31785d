"""What the evaluation pod's image lets a candidate reach: run inside it, as the pod's user.

The evaluation pod (``python -m services.evaluator.pod``) trains and scores untrusted code in the
image it runs in, so the image must hold what the local strict sandbox shows a candidate and
nothing more: torch, numpy, the standard library and what the harness imports
(``ALLOWED`` in services/evaluator/view.py, with their requirements). Checked here, from the
image's own interpreter:

* every installed distribution is one of ``ALLOWED`` or (recursively) required by one;
* none of the packages a candidate could rebuild labels with, nor nasloop's service clients,
  imports (scikit-learn bundles the digits data set; scipy, pandas, datasets; gRPC, the S3 and
  Kubernetes clients; the other services' code);
* no copy of the digits data file (``digits.csv.gz``) anywhere under the interpreter's prefixes
  or ``/usr``, ``/opt``, ``/var``, ``/srv``, ``/home`` or ``/root``;
* the pod's entry point imports.

Standard library only (the image has no ``packaging``). Exit 0, or 1 with what was found.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

# Packages a candidate must not import in the pod (module names).
UNREACHABLE = (
    "sklearn", "scipy", "pandas", "datasets", "grpc", "minio", "kubernetes", "transformers",
    "datasketch", "services.generator", "services.trainer", "services.controller",
    "services.novelty",
)  # fmt: skip
DATA_FILES = ("digits.csv.gz", "digits.csv")
SEARCHED = ("/usr", "/opt", "/var", "/srv", "/home", "/root")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_names(view: Path) -> list[str]:
    for node in ast.parse(view.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
            "ALLOWED"
        ]:
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    raise SystemExit(f"{view}: no ALLOWED tuple")


def closure(roots: list[str]) -> set[str]:
    """``roots`` and, recursively, what they require, with the extras asked for
    (``cuda-toolkit[cufft,...]``, as CUDA torch asks; other markers ignored: a superset)."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonical(r), "") for r in roots]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            wanted = {canonical(e) for e in re.findall(r"\bextra\s*==\s*['\"]([^'\"]+)['\"]", req)}
            if wanted and canonical(extra) not in wanted:
                continue
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", req)
            if m:
                extras = [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]
                todo += [(canonical(m.group(1)), e) for e in ["", *extras]]
    return {name for name, _ in seen}


def problems() -> list[str]:
    found: list[str] = []
    import services.evaluator

    view = Path(services.evaluator.__file__).parent / "view.py"
    allowed = closure(allowed_names(view))
    installed = {canonical(d.metadata["Name"]) for d in md.distributions()}
    if extra := sorted(installed - allowed):
        found.append(f"installed beyond the strict view: {', '.join(extra)}")
    for module in UNREACHABLE:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(f"{module} imports")
    roots = sorted({os.path.realpath(r) for r in (sys.prefix, sys.base_prefix, *SEARCHED)})
    for root in [r for r in roots if not any(r.startswith(o + "/") for o in roots)]:
        for dirpath, _dirs, files in os.walk(root, onerror=lambda _e: None):
            found += [f"data file {dirpath}/{f}" for f in files if f in DATA_FILES]
    try:
        importlib.import_module("services.evaluator.pod")
    except Exception as e:
        found.append(f"the pod's entry point does not import: {type(e).__name__}: {e}")
    if not found:
        print(
            f"ok: {len(installed)} distributions, all within the strict view: {sorted(installed)}"
        )
    return found


if __name__ == "__main__":
    issues = problems()
    for issue in issues:
        print(f"FAILED: {issue}", file=sys.stderr)
    sys.exit(1 if issues else 0)
