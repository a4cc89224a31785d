"""scripts/gpu_loop_report.py: the figures of a timed loop run from its cycle summaries and
nvidia-smi samples (the samples here are written in nvidia-smi's csv,noheader,nounits form; no
GPU on this machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_loop_report.py"


def summary(cycle: int, generated: int, valid: int, seconds: dict[str, float], wall: float) -> str:
    return json.dumps(
        {"run": "r", "cycle": cycle, "generated": generated, "valid": valid,
         "seconds": seconds, "wall_seconds": wall, "service_seconds": wall - 1}
    )  # fmt: skip


def test_throughput_busy_share_and_where_the_time_went(tmp_path: Path) -> None:
    for n, (gen, fine_tune) in enumerate([(64, 30.0), (64, 50.0)], start=1):
        d = tmp_path / "store" / "runs" / "r" / "cycles" / str(n)
        d.mkdir(parents=True)
        steps = {"generate": 100.0, "fine_tune": fine_tune, "novelty": 1.0}
        (d / "summary.json").write_text(summary(n, gen, 10, steps, 100.0 + fine_tune + 1.0))
    samples = tmp_path / "gpu.csv"
    samples.write_text(
        "2026/12/07 12:00:00.000, 0, 500\n"
        "2026/12/07 12:00:00.500, 80, 9000\n"
        "2026/12/07 12:00:01.000, 100, 9000\n"
        "[N/A], [N/A], [N/A]\n"  # not a sample: skipped
        "2026/12/07 12:00:01.500, 0, 9000\n"
    )
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "store"), "r", "360", str(samples)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if ln.startswith("gpu_loop: "))
    f = json.loads(line.removeprefix("gpu_loop: "))
    assert f["candidates"] == 128 and f["valid"] == 20 and f["cycles"] == 2
    assert f["candidates_per_gpu_hour"] == 1280.0  # 128 in 360 s
    assert f["gpu_samples"] == 4 and f["gpu_busy_share"] == 0.5
    assert f["gpu_mean_utilization"] == 45.0
    assert f["steps"] == {"generate": 200.0, "fine_tune": 80.0, "novelty": 2.0}
    assert f["outside_cycles_seconds"] == 360 - 282.0
    assert "GPU busy share: 50.0% of 4 samples" in out


def test_no_summaries_is_an_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "missing", "10"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1 and "no cycle summaries" in r.stderr
