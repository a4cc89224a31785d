"""Cost per candidate of the evaluator's confined run, for paired A/B timing of two trees.

Loads the prepared digits set, then evaluates ``--candidates`` copies of the reference network
one after another through ``run_confined`` (forked, confined children, as a warm worker runs
them; no bubblewrap, whose start is paid once per worker). Run it under farm-bench once with
this tree and once with another tree on PYTHONPATH (the issue 18 two-process design against the
single process before it):

    farm-bench -n 5 --timeout 900 -- env PYTHONPATH=. .venv/bin/python \
        benchmarks/phases_bench.py --candidates 6 \
        --vs "env PYTHONPATH=/tmp/before .venv/bin/python benchmarks/phases_bench.py --candidates 6"

The difference of the medians divided by the candidates is the cost added per candidate.
It also prints its own per-candidate wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace

sys.path[1:1] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")]

import torch  # noqa: E402
from candidates import GOOD_NET  # noqa: E402

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import (  # noqa: E402
    confine,
    protocols,
    seccomp_filter,
)
from services.evaluator.datasets import DatasetCache, SandboxData  # noqa: E402
from services.evaluator.task import Task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--protocol", default="quick")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a worker: no OpenMP pool in the parent of forked children
    with tempfile.TemporaryDirectory() as d:
        data = SandboxData.load(DatasetCache(d).get("digits").sandbox_file)
    try:  # as a worker of the two-process design holds its data (absent from older trees)
        from services.evaluator.private import private_data, scrub_freed_memory
    except ImportError:
        pass
    else:
        scrub_freed_memory()
        data = private_data(data)
    proto = replace(protocols.named(EvaluatorConfig())[args.protocol], time_limit_s=120)
    uid = 65534 if os.geteuid() == 0 else None
    limits = confine.Limits(
        wall_s=120, cpu_s=120, memory_bytes=4 << 30, file_bytes=1 << 20, open_files=64,
        uid=uid, gid=uid, seccomp=seccomp_filter.available(),
    )  # fmt: skip
    t0 = time.perf_counter()
    for i in range(args.candidates):
        r = confine.run_confined(Task(f"c{i}", GOOD_NET, proto), data, limits)
        if r.status != common.STATUS_OK:
            raise SystemExit(f"candidate {i}: {common.Status.Name(r.status)} {r.message}")
    per = (time.perf_counter() - t0) / args.candidates
    print(f"{args.protocol}: {per * 1000:.0f} ms per candidate (wall, in process)")


if __name__ == "__main__":
    main()
