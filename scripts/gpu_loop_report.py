"""The figures of one timed loop run (scripts/gpu_loop.sh): throughput, GPU busy share, where
the time went.

    python scripts/gpu_loop_report.py STORE_DIR RUN WALL_SECONDS [GPU_SAMPLES_CSV]

Reads the run's records in a local store (``runs/<RUN>/cycles/<n>/summary.json``: candidates,
valid ones, per-step seconds, service seconds) and, when given, ``nvidia-smi`` samples
(``--query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits``, one line
per sample; several GPUs: their lines interleave, each counts). Prints a table and one JSON line
(``gpu_loop: {...}``) with:

* ``candidates_per_gpu_hour``: candidates generated (all cycles) / the timed wall time in hours
  (one GPU: wall time is GPU time);
* ``gpu_busy_share``: the share of samples in which the GPU was busy (utilization > 0), and
  ``gpu_mean_utilization`` (percent);
* ``steps``: seconds per cycle step summed over the cycles (generate — which streams candidates
  into evaluation —, novelty, select, train, publish, ...), ``outside_cycles`` (start-up: the
  services, the engine, the seed corpus namespace; shutdown) = wall minus the cycles' wall time.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def cycle_summaries(store: Path, run: str) -> list[dict[str, Any]]:
    cycles = store / "runs" / run / "cycles"
    found = []
    for path in sorted(cycles.glob("*/summary.json"), key=lambda p: int(p.parent.name)):
        found.append(json.loads(path.read_text()))
    return found


def gpu_samples(path: Path) -> list[float]:
    """Utilization (percent) of every sample; lines that are not samples are skipped."""
    out = []
    with path.open() as f:
        for row in csv.reader(f):
            try:
                out.append(float(row[1]))
            except (IndexError, ValueError):
                continue
    return out


def figures(summaries: list[dict[str, Any]], wall: float, util: list[float] | None) -> dict:
    steps: dict[str, float] = defaultdict(float)
    for s in summaries:
        for step, seconds in (s.get("seconds") or {}).items():
            steps[step] += float(seconds)
    cycles_wall = sum(float(s.get("wall_seconds") or 0.0) for s in summaries)
    generated = sum(int(s.get("generated") or 0) for s in summaries)
    out: dict[str, Any] = {
        "cycles": len(summaries),
        "candidates": generated,
        "valid": sum(int(s.get("valid") or 0) for s in summaries),
        "wall_seconds": round(wall, 1),
        "cycles_wall_seconds": round(cycles_wall, 1),
        "outside_cycles_seconds": round(max(wall - cycles_wall, 0.0), 1),
        "steps": {k: round(v, 1) for k, v in sorted(steps.items(), key=lambda kv: -kv[1])},
        "service_seconds": round(sum(float(s.get("service_seconds") or 0) for s in summaries), 1),
        "candidates_per_gpu_hour": round(generated / (wall / 3600.0), 1) if wall > 0 else 0.0,
    }
    if util:
        out["gpu_samples"] = len(util)
        out["gpu_busy_share"] = round(sum(u > 0 for u in util) / len(util), 3)
        out["gpu_mean_utilization"] = round(sum(util) / len(util), 1)
    return out


def table(f: dict[str, Any]) -> str:
    lines = [
        f"cycles {f['cycles']}, candidates {f['candidates']} ({f['valid']} valid), "
        f"wall {f['wall_seconds']:.0f} s",
        f"candidates per GPU-hour: {f['candidates_per_gpu_hour']:,.0f}",
    ]
    if "gpu_busy_share" in f:
        lines.append(
            f"GPU busy share: {f['gpu_busy_share']:.1%} of {f['gpu_samples']} samples "
            f"(mean utilization {f['gpu_mean_utilization']:.1f} %)"
        )
    else:
        lines.append("GPU busy share: no nvidia-smi samples")
    wall = f["wall_seconds"] or 1.0
    lines.append("where the time went (s, share of wall):")
    for step, seconds in f["steps"].items():
        lines.append(f"  {step:<24} {seconds:8.1f}  {seconds / wall:6.1%}")
    lines.append(
        f"  {'outside the cycles':<24} {f['outside_cycles_seconds']:8.1f}  "
        f"{f['outside_cycles_seconds'] / wall:6.1%}  (start-up, shutdown)"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        raise SystemExit("usage: gpu_loop_report.py STORE_DIR RUN WALL_SECONDS [GPU_SAMPLES_CSV]")
    store, run, wall = Path(argv[0]), argv[1], float(argv[2])
    summaries = cycle_summaries(store, run)
    if not summaries:
        print(f"no cycle summaries under {store}/runs/{run}/cycles/", file=sys.stderr)
        return 1
    util = gpu_samples(Path(argv[3])) if len(argv) == 4 and Path(argv[3]).is_file() else None
    f = figures(summaries, wall, util)
    print(table(f))
    print("gpu_loop: " + json.dumps(f, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
