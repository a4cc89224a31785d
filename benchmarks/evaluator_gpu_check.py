"""The evaluator's GPU check, for a machine with a CUDA GPU (issue 3, item 9).

CIFAR-10-shaped data (the real tarball with --cifar, else a generated one of the same shape:
50,000 + 10,000 images of 3x32x32) held on the GPU, one candidate per forked child (the worker
never initialises CUDA, so every child starts CUDA fresh), and a candidate that asks for more
GPU memory than exists must come back as STATUS_CUDA_OUT_OF_MEMORY while the next candidate is
evaluated normally.

Usage: python benchmarks/evaluator_gpu_check.py [--cifar PATH] [--device cuda] [--sandbox weak]
(--device cpu runs the same script on a machine without a GPU, as a smoke test.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from candidates import GOOD_NET, protocol, replace  # noqa: E402
from cifar_fake import write_cifar_tarball  # noqa: E402

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator.datasets import DatasetCache  # noqa: E402
from services.evaluator.engine import score  # noqa: E402
from services.evaluator.pool import LocalExecutor  # noqa: E402
from services.evaluator.task import Task  # noqa: E402

CUDA_OOM = replace(
    "self.head = nn.Linear(32, out_shape[0])",
    "self.head = nn.Linear(32, out_shape[0])\n"
    "        self.hog = torch.empty(1 << 40, dtype=torch.uint8, device=device)",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cifar", help="the real cifar-10-python.tar.gz (default: generated)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--sandbox", choices=["strict", "weak"], default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sandbox = args.sandbox or ("strict" if shutil.which("bwrap") else "weak")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="nasloop-gpucheck-") as tmp:
        tmp_path = Path(tmp)
        source = args.cifar or str(
            write_cifar_tarball(tmp_path / "cifar.tar.gz", per_batch=10_000, test=10_000)
        )
        t0 = time.perf_counter()
        prepared = DatasetCache(tmp_path / "data").get("cifar10", source)
        print(f"dataset prepared in {time.perf_counter() - t0:.1f} s: {prepared.info}")
        cfg = EvaluatorConfig(workers=1, sandbox=sandbox, device=args.device)
        ex = LocalExecutor(cfg, tmp_path / "data")
        ex.start()
        proto = protocol(dataset="cifar10", device=args.device, time_limit_s=600)
        try:
            cases = [("good", GOOD_NET)] * args.repeats + [("cuda_oom", CUDA_OOM)]
            cases.append(("good_after_oom", GOOD_NET))
            for name, code in cases:
                t0 = time.perf_counter()
                report, _ = ex.run(Task(name, code, proto), prepared, threading.Event())
                wall = time.perf_counter() - t0
                report = score(report, prepared.test_labels, proto.failure_floor)
                status = common.Status.Name(report.status)
                print(
                    f"{name}: {status} stage={common.Stage.Name(report.last_stage)} "
                    f"acc={report.accuracy:.4f} train={report.train_seconds:.2f}s "
                    f"wall={wall:.2f}s peak_rss={report.peak_memory_bytes >> 20} MiB "
                    f"msg={report.message!r}"
                )
                want = "STATUS_CUDA_OUT_OF_MEMORY" if name == "cuda_oom" else "STATUS_OK"
                if args.device == "cpu" and name == "cuda_oom":
                    want = "STATUS_OUT_OF_MEMORY"
                if status != want and not (want == "STATUS_OK" and status == "STATUS_LOW_ACCURACY"):
                    print(f"  UNEXPECTED: wanted {want}")
                    failures += 1
        finally:
            ex.close()
    print("GPU check:", "passed" if not failures else f"{failures} unexpected result(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
