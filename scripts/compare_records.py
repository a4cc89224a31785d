"""Compare two runs' records straight from a local store's files, without the code under change.

    python scripts/compare_records.py RUN_A RUN_B [--store .nasloop/store]

For every candidate of every cycle and of the baseline (keyed by cycle and index): its code,
status, accuracy, parameter count, novelty verdict and nearest id (the run's name masked),
selection and sampling seed; and each cycle's training pairs. Prints how many differ and the
first few; exits 1 if any does. A refactoring that must not change behaviour runs the same
seed before and after (``make run RUN_ARGS="--name before --set seed=0"``) and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, Any]


def load(store: Path, run: str) -> dict[Key, Any]:
    root = store / "runs" / run
    if not root.is_dir():
        raise SystemExit(f"no run {run!r} under {store}")
    out: dict[Key, Any] = {}
    for f in sorted(root.rglob("candidates.jsonl")):
        where = str(f.parent.relative_to(root))
        for line in f.read_text().splitlines():
            r = json.loads(line)
            ev = r.get("evaluation") or {}
            nv = r.get("novelty") or {}
            out[(where, r["index"])] = (
                r["code"],
                ev.get("status"),
                round(ev.get("accuracy", 0.0), 6),
                ev.get("parameter_count"),
                nv.get("novel"),
                nv.get("nearest_id", "").replace(run, "RUN"),
                r.get("selected"),
                r.get("seed"),
            )
    for f in sorted((root / "pairs").glob("*.jsonl")):
        out[("pairs", f.name)] = f.read_text().replace(run, "RUN")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--store", type=Path, default=Path(".nasloop/store"))
    args = ap.parse_args()
    a, b = load(args.store, args.a), load(args.store, args.b)
    differ = [k for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
    print(f"{len(a)} vs {len(b)} entries; {len(differ)} differ")
    for k in differ[:20]:
        print(k, "\n  A:", str(a.get(k))[:300], "\n  B:", str(b.get(k))[:300])
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
