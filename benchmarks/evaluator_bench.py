"""Evaluator benchmark (issue targets on the 2-core CI machine):

* sandbox overhead per candidate: a warm worker's forked, confined child vs a fresh interpreter
  that imports torch (target ≤ 150 ms vs ≈ 2 s);
* data path: one epoch of a reference network through the evaluator vs a bare training loop on
  the same tensors in this process (target ratio ≤ 1.15);
* candidates per minute on digits with 2 workers, through gRPC;
* the share of the LEMUR-style networks in tests/lemur_nets.py that pass (issue 11).

Usage: python benchmarks/evaluator_bench.py [--repeats 15] [--candidates 16] [--sandbox strict]
Prints one line per figure; docs/benchmarks.md records the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from candidates import GOOD_FEATURES, GOOD_NET, protocol, replace  # noqa: E402
from servers import service_server  # noqa: E402

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.rpc import connect  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from nasloop.v1 import evaluator_pb2 as pb  # noqa: E402
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc  # noqa: E402
from services.evaluator.datasets import DatasetCache, SandboxData  # noqa: E402
from services.evaluator.harness import batches  # noqa: E402
from services.evaluator.pool import LocalExecutor  # noqa: E402
from services.evaluator.task import Task  # noqa: E402

# The smallest honest candidate: the sandbox's cost, not the network's, dominates its run.
TINY_NET = replace(
    GOOD_FEATURES,
    """self.features = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_shape[1], out_shape[0])""",
)
# The data-path reference: a VGG-style network whose epoch is a few seconds on one core.
REFERENCE_NET = replace(
    GOOD_FEATURES,
    """self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(64, out_shape[0])""",
)
PROTOCOL = protocol(seed=42, time_limit_s=300)

FRESH = """
import sys, time, json
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness
from services.evaluator.task import Task
task = Task.from_json(sys.stdin.read())
r = Harness(task, SandboxData.load(sys.argv[1])).run()
print(json.dumps({"status": r.status, "work": sum(t for _, t in r.timings)}))
"""


def stage_work(timings: list[tuple[int, float]]) -> float:
    return sum(t for _, t in timings)


def sandbox_overhead(ex: LocalExecutor, prepared, repeats: int) -> None:  # type: ignore[no-untyped-def]
    task = Task("tiny", TINY_NET, PROTOCOL, "validate")
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report, _ = ex.run(task, prepared, threading.Event())
        wall = time.perf_counter() - t0
        assert report.status == common.STATUS_OK, report.message
        warm.append(wall - stage_work(report.timings))
    fresh = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", FRESH, str(prepared.sandbox_file)],
            input=task.to_json(), capture_output=True, text=True, cwd=ROOT, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        fresh.append(wall - json.loads(out.stdout)["work"])
    w, f = statistics.median(warm), statistics.median(fresh)
    print(
        f"sandbox overhead per candidate (strict={ex.strict}): warm fork {w * 1000:.0f} ms "
        f"(p90 {sorted(warm)[int(0.9 * len(warm))] * 1000:.0f} ms), fresh interpreter "
        f"{f * 1000:.0f} ms; ratio {f / w:.1f}x  [target ≤ 150 ms]"
    )


def bare_epoch(prepared) -> float:  # type: ignore[no-untyped-def]
    """The same work as the evaluator's run, as a plain loop in this process."""
    torch.set_num_threads(1)
    data = SandboxData.load(prepared.sandbox_file)
    module = types.ModuleType("reference")
    exec(compile(REFERENCE_NET, "<reference>", "exec"), module.__dict__)
    task = Task("ref", REFERENCE_NET, PROTOCOL)
    t0 = time.perf_counter()
    torch.manual_seed(PROTOCOL.seed)
    net = module.Net((16, 3, 32, 32), (10,), PROTOCOL.prm(), torch.device("cpu"))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=PROTOCOL.lr, momentum=PROTOCOL.momentum)
    crit = torch.nn.CrossEntropyLoss()
    for x, y in batches(data, task, 0):
        opt.zero_grad()
        loss = crit(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 3)
        opt.step()
    net.eval()
    with torch.no_grad():
        for i in range(0, len(data.test_x), 256):
            net(data.test_x[i : i + 256])
    return time.perf_counter() - t0


def data_path(ex: LocalExecutor, prepared, repeats: int) -> None:  # type: ignore[no-untyped-def]
    task = Task("ref", REFERENCE_NET, PROTOCOL)
    ratios, evals, bares = [], [], []
    for _ in range(repeats):  # interleaved, so that the machine's swings hit both alike
        t0 = time.perf_counter()
        report, _ = ex.run(task, prepared, threading.Event())
        ev = time.perf_counter() - t0
        assert report.status == common.STATUS_OK, report.message
        bare = bare_epoch(prepared)
        evals.append(ev)
        bares.append(bare)
        ratios.append(ev / bare)
    print(
        f"data path, one epoch of the reference network + test predictions: evaluator "
        f"{statistics.median(evals):.2f} s, bare loop {statistics.median(bares):.2f} s; "
        f"ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f})  [target ≤ 1.15]"
    )


def throughput(n: int, data_dir: Path) -> None:
    env = {
        "NASLOOP_STORE__URL": f"file://{data_dir / 'store'}",
        "NASLOOP_EVALUATOR__DATA_DIR": str(data_dir / "service"),
        "NASLOOP_EVALUATOR__WORKERS": "2",
    }
    log = data_dir / "server.log"
    with (
        service_server("evaluator", env, log, timeout_s=300) as server,
        connect(server.address) as ch,
    ):
        stub = pb_grpc.EvaluatorStub(ch)
        widths = [8 + 2 * i for i in range(n)]  # distinct networks of similar cost
        cands = [
            common.Candidate(id=f"c{i}", code=GOOD_NET.replace("16", str(w)))
            for i, w in enumerate(widths)
        ]
        request = pb.EvaluateRequest(candidates=cands, protocol=common.EvaluationProtocol())
        t0 = time.perf_counter()
        results = list(stub.Evaluate(request, timeout=3600))
        wall = time.perf_counter() - t0
    ok = sum(r.result.last_stage == common.STAGE_EVALUATED for r in results)
    print(
        f"throughput on digits (lemur-1epoch, 2 workers, gRPC): {n} candidates in "
        f"{wall:.1f} s = {60 * n / wall:.1f} candidates/min ({ok} evaluated)"
    )


def lemur_share() -> None:
    """The LEMUR-style networks through the static stages and the harness, in process."""
    from candidates import sandbox_data
    from lemur_nets import lemur_outcomes

    out = lemur_outcomes(sandbox_data(32, 8, seed=2))
    ok = sum(v == "STATUS_OK" for v in out.values())
    failed = ", ".join(f"{k}: {v}" for k, v in out.items() if v != "STATUS_OK")
    print(f"LEMUR-style networks passing: {ok} of {len(out)} (failing: {failed or 'none'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--sandbox", choices=["strict", "weak"], default="strict")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="nasloop-evalbench-") as tmp:
        tmp_path = Path(tmp)
        datasets = DatasetCache(tmp_path / "data")
        prepared = datasets.get("digits")
        cfg = EvaluatorConfig(workers=1, sandbox=args.sandbox)
        ex = LocalExecutor(cfg, datasets.data_dir)
        ex.start()
        try:
            sandbox_overhead(ex, prepared, args.repeats)
            data_path(ex, prepared, max(3, args.repeats // 3))
        finally:
            ex.close()
        throughput(args.candidates, tmp_path)
    lemur_share()


if __name__ == "__main__":
    main()
