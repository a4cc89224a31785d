"""The outside epoch check (services/evaluator/epoch.py): false positives and what it catches.

Runs each network through ``run_confined`` (the forked, confined train process and the score
processes; no bubblewrap needed for the timing) on the prepared digits set under a protocol
(``lemur-1epoch`` by default), and prints, per network, its status and the share of the epoch
budget its train phase used (the check refuses above 1). Honest networks: the first
``--seeds`` networks of the seed grammar (nasloop/corpus) and the LEMUR-style networks of
tests/lemur_nets.py. Attacks: the meter
switched off through torch's global hook table, then extra passes over kept batches (at the
end, or one stored batch again with each new one), and the same extra work on every batch.

Usage: python benchmarks/epoch_check.py [--seeds 30] [--protocol lemur-1epoch] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace as dc_replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from candidates import with_meter_off_learn  # noqa: E402
from lemur_nets import NETS  # noqa: E402

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.corpus.grammar import generate  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import (  # noqa: E402
    confine,
    epoch,
    protocols,
    seccomp_filter,
    worker,  # noqa: F401  (its trusted imports, as a worker has them)
)
from services.evaluator.datasets import DatasetCache, SandboxData  # noqa: E402
from services.evaluator.policy import static_check  # noqa: E402
from services.evaluator.task import Task  # noqa: E402

STEP = (
    "inputs, labels = inputs.to(self.device), labels.to(self.device)\n"
    "            self.optimizer.zero_grad()\n"
    "            loss = self.criteria[0](self(inputs), labels)\n"
    "            loss.backward()\n"
    "            nn.utils.clip_grad_norm_(self.parameters(), 3)\n"
    "            self.optimizer.step()"
)
LOOP = "        for inputs, labels in train_data:\n            " + STEP


_learn = with_meter_off_learn


def replay_at_end(extra: float) -> str:
    """One pass, then ``extra`` more passes over the kept batches (fractions: a share of them)."""
    return _learn(
        "        kept = []\n"
        "        for inputs, labels in train_data:\n"
        "            kept.append((inputs, labels))\n"
        f"            {STEP}\n"
        f"        more = int(len(kept) * {extra})\n"
        "        for i in range(more):\n"
        "            inputs, labels = kept[i % len(kept)]\n"
        f"            {STEP}"
    )


def interleaved(extra: int) -> str:
    """Each new batch, then ``extra`` kept batches again (spread over the epoch)."""
    return _learn(
        "        kept = []\n"
        "        for inputs, labels in train_data:\n"
        "            kept.append((inputs, labels))\n"
        f"            for inputs, labels in [kept[-1]] + kept[-1 - {extra}:-1]:\n"
        f"                {STEP}"
    )


def echo(times: int) -> str:
    """Every batch stepped on ``times`` times at once: the same work per batch, the hole."""
    return _learn(
        "        for inputs, labels in train_data:\n"
        f"            for _ in range({times}):\n"
        f"                {STEP}"
    )


ATTACKS = {
    "replay_end_x1.5": replay_at_end(0.5),
    "replay_end_x2": replay_at_end(1),
    "replay_end_x3": replay_at_end(2),
    "replay_end_x6": replay_at_end(5),
    "interleaved_x2": interleaved(1),
    "interleaved_x3": interleaved(2),
    "echo_x3": echo(3),
}


class Recorded(epoch.Ledger):
    last: Recorded | None = None

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        Recorded.last = self


def run(name: str, code: str, task_proto, data: SandboxData) -> dict:  # type: ignore[no-untyped-def]
    static = static_check(code, EvaluatorConfig().max_code_bytes)
    if static.status != common.STATUS_OK:
        return {"name": name, "status": common.Status.Name(static.status)}
    uid = 65534 if os.geteuid() == 0 else None
    limits = confine.Limits(
        wall_s=300, cpu_s=300, memory_bytes=4 << 30, file_bytes=1 << 20, open_files=64,
        uid=uid, gid=uid, seccomp=seccomp_filter.available(),
    )  # fmt: skip
    Recorded.last = None
    t0 = time.monotonic()
    r = confine.run_confined(Task(name, code, task_proto), data, limits)
    led = Recorded.last
    state = r.parameter_count * 4
    out = {
        "name": name,
        "status": common.Status.Name(r.status),
        "message": r.message[:160],
        "wall_s": round(time.monotonic() - t0, 2),
    }
    if led is not None and led.end is not None:
        out.update(
            batches=led.batches,
            train_cpu_s=round(led.train_ns() / 1e9, 3),
            pace_ms=round(led.pace_ns() / 1e6, 2),
            first_ms=round(led.first_ns() / 1e6, 1),
            budget_use=round(led.budget_use(state), 3),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--out", default="")
    ap.add_argument("--protocol", default="lemur-1epoch")
    args = ap.parse_args()
    confine.Ledger = Recorded  # type: ignore[misc]  # the figures of each run
    with tempfile.TemporaryDirectory() as d:
        prepared = DatasetCache(d).get("digits")
        data = SandboxData.load(prepared.sandbox_file)
    base = protocols.named(EvaluatorConfig())[args.protocol]
    rows = []
    nets = [(f"seed:{n.id}", n.code) for n in generate(args.seeds)]
    nets += [(f"lemur:{k}", code) for k, (code, req) in NETS.items() if not req]
    for kind, items in (("honest", nets), ("attack", list(ATTACKS.items()))):
        for name, code in items:
            row = run(name, code, dc_replace(base, time_limit_s=300), data)
            row["kind"] = kind
            rows.append(row)
            print(json.dumps(row), flush=True)
    honest = [r for r in rows if r["kind"] == "honest" and "budget_use" in r]
    refused = [r for r in honest if r["status"] == "STATUS_PROTOCOL_VIOLATION"]
    print(
        f"honest networks timed: {len(honest)}; refused by the epoch check: {len(refused)}; "
        f"largest share of the budget used {max((r['budget_use'] for r in honest), default=0):.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
