"""The evaluator's GPU check (issue 3, item 9), as the Kubernetes pod runs candidates.

CIFAR-10-shaped data (50,000 training and 10,000 test images of 3x32x32, random with a weak
class signal) held on the GPU; each candidate in its own forked child that drops to uid 65534,
sets rlimits, starts CUDA and installs the seccomp filter (exactly `services/evaluator/pod.py`'s
path: `run_confined`); one candidate asks for 1 TiB of GPU memory and must come back
STATUS_CUDA_OUT_OF_MEMORY, and the next must be evaluated normally.

Runs on a bare GPU machine with torch, numpy and protobuf: nasloop's config and store modules
(pydantic, minio) are not needed on this path and are stubbed when missing.

Usage: python3 benchmarks/evaluator_gpu_check.py [cuda|cpu] [n_train]
"""

from __future__ import annotations

import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]
for _mod, _names in (
    ("nasloop.config", ("EvaluatorConfig", "StoreConfig")),
    ("nasloop.store", ("ObjectStore",)),
):
    try:
        __import__(_mod)
    except ImportError:
        _stub = types.ModuleType(_mod)
        for _n in _names:
            setattr(_stub, _n, object)
        sys.modules[_mod] = _stub

# What the sandbox worker pre-imports before it forks (see services/evaluator/worker.py).
import cProfile  # noqa: E402, F401

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
import torch.optim  # noqa: E402

from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import seccomp_filter  # noqa: E402
from services.evaluator.confine import Limits, run_confined  # noqa: E402
from services.evaluator.datasets import SandboxData  # noqa: E402
from services.evaluator.task import Protocol, Task  # noqa: E402


def good_net() -> str:
    """GOOD_NET's text (importing tests/candidates.py would need pydantic)."""
    with open(os.path.join(ROOT, "tests", "candidates.py")) as f:
        src = f.read()
    return src.split('GOOD_NET = """')[1].split('"""')[0]


def main() -> int:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    print("torch", torch.__version__, "seccomp", seccomp_filter.available(), flush=True)
    good = good_net()
    oom = good.replace(
        "super().__init__()",
        "super().__init__(); self.h = torch.empty(1 << 40, dtype=torch.uint8, device=device)",
    )
    torch.set_num_threads(1)  # never touch CUDA here: each child starts it afresh
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n_train + 10_000,), generator=g)
    x = torch.randn(n_train + 10_000, 3, 32, 32, generator=g) + labels.view(-1, 1, 1, 1) * 0.05
    data = SandboxData(x[:n_train], labels[:n_train], x[n_train:], 10)
    test_y = labels[n_train:].numpy()
    protocol = Protocol(
        "lemur-1epoch", "cifar10-shaped", 1, 16, 0.01, 0.9, 0.2, 1, 0, 0, 0.12, 300.0,
        10**7, device,
    )  # fmt: skip
    uid = 65534 if os.geteuid() == 0 else None
    failures = 0
    cases = [("good", good), ("good", good), ("cuda_oom", oom), ("good_after_oom", good)]
    for name, code in cases:
        limits = Limits(300, 305, 8 << 30, 64 << 20, 256, uid, uid, seccomp_filter.available())
        t0 = time.time()
        r = run_confined(Task(name, code, protocol, "evaluate", 1), data, limits)
        wall = time.time() - t0
        acc = float((r.outputs.argmax(1) == test_y).mean()) if r.outputs is not None else 0.0
        status = common.Status.Name(r.status)
        print(
            f"{name}: {status} stage={common.Stage.Name(r.last_stage)} acc={acc:.4f} "
            f"train={r.train_seconds:.2f}s wall={wall:.2f}s msg={r.message[:160]!r}",
            flush=True,
        )
        want = "STATUS_OK"
        if name == "cuda_oom":
            want = "STATUS_CUDA_OUT_OF_MEMORY" if device == "cuda" else "STATUS_OUT_OF_MEMORY"
        failures += status != want
    print("GPU check:", "passed" if not failures else f"{failures} unexpected result(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
