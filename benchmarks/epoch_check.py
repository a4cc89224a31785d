"""The outside epoch check (services/evaluator/epoch.py): false positives and what it catches.

Runs each network through ``run_confined`` (the forked, confined train process and the score
processes; no bubblewrap needed for the timing) on the prepared digits set under a protocol
(``lemur-1epoch`` by default), and prints, per network, its status and the share of the epoch
budget its train phase used (the check refuses above 1). Honest networks: the first
``--seeds`` networks of the seed grammar (nasloop/corpus) and the LEMUR-style networks of
tests/lemur_nets.py. Attacks (tests/adversarial/replay.py): the meter switched off through
torch's global hook table, then extra passes over kept batches (at the end, or earlier ones
again with each new one), each batch stepped on several times, a replay hidden in forward(),
and the attack the reference step invites (forward() slow outside learn()). Per network it
prints both budgets' shares and the time per batch over one reference step.

Usage: python benchmarks/epoch_check.py [--seeds 30] [--protocol lemur-1epoch] [--out FILE.json]
       [--kinds honest,attack]
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

from adversarial import replay  # noqa: E402
from candidates import GOOD_NET, replace  # noqa: E402
from lemur_nets import NETS  # noqa: E402

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.corpus.grammar import generate  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import (  # noqa: E402
    confine,
    epoch,
    protocols,
    seccomp_filter,
)
from services.evaluator.datasets import DatasetCache, SandboxData  # noqa: E402
from services.evaluator.policy import static_check  # noqa: E402
from services.evaluator.task import Task  # noqa: E402

VALID = ("STATUS_OK", "STATUS_LOW_ACCURACY")
# learn() with a loss of its own: the harness then measures the loss after the epoch, an eval
# pass over up to 1,024 of its samples inside the timed train phase.
OWN_LOSS = replace("self.criteria[0](", "nn.functional.cross_entropy(", GOOD_NET)

ATTACKS = {
    "replay_end_x1.5": replay.replay_at_end(0.5),
    "replay_end_x2": replay.replay_at_end(1),
    "replay_end_x3": replay.replay_at_end(2),
    "replay_end_x6": replay.replay_at_end(5),
    "interleaved_x2": replay.interleaved(1),
    "interleaved_x3": replay.interleaved(2),
    "echo_x1.5": replay.echo(3, 2),
    "echo_x2": replay.echo(2),
    "echo_x2.5": replay.echo(5, 2),
    "echo_x3": replay.echo(3),
    "replay_in_forward_x3": replay.replay_in_forward(3),
    "burn_outside_learn_x3": replay.burn_outside_learn(3, 4),
}


def valid_candidates(store: Path, runs: str) -> list[tuple[str, str]]:
    """(run/id, code) of every candidate whose evaluation ended OK or LOW_ACCURACY."""
    from nasloop.records import loads_records

    out = []
    for path in sorted(store.glob(f"runs/{runs}/**/candidates.jsonl")):
        run = path.relative_to(store).parts[1]
        for r in loads_records(path.read_bytes()):
            if r.evaluation is not None and r.evaluation.status in VALID and r.code:
                out.append((f"{run}/{r.id}", r.code))
    return out


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
            reference_ms=round(led.reference_ns() / 1e6, 2),
            per_batch_over_reference=round(
                (led.train_ns() - led.first_ns()) / max(led.batches - 1, 1)
                / max(led.reference_ns(), 1), 2,
            ),
            reference_use=round(led.reference_use(state), 3),
            reference_steps_ms=round((led.marks[-1] - led.marks[0]) / 1e6, 1) if led.marks else 0,
        )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--out", default="")
    ap.add_argument("--protocol", default="lemur-1epoch")
    ap.add_argument("--kinds", default="honest,attack", help="which networks to run")
    ap.add_argument("--store", type=Path, help="a file:// store: its runs' valid candidates too")
    ap.add_argument("--runs", default="*", help="which runs of --store (a glob)")
    args = ap.parse_args()
    confine.Ledger = Recorded  # type: ignore[misc]  # the figures of each run
    with tempfile.TemporaryDirectory() as d:
        prepared = DatasetCache(d).get("digits")
        data = SandboxData.load(prepared.sandbox_file)
    base = protocols.named(EvaluatorConfig())[args.protocol]
    rows = []
    nets = [("good", GOOD_NET), ("good:own_loss", OWN_LOSS)]
    nets += [(f"seed:{n.id}", n.code) for n in generate(args.seeds)]
    nets += [(f"lemur:{k}", code) for k, (code, req) in NETS.items() if not req]
    if args.store:
        nets += valid_candidates(args.store, args.runs)
    for kind, items in (("honest", nets), ("attack", list(ATTACKS.items()))):
        if kind not in args.kinds.split(","):
            continue
        for name, code in items:
            row = run(name, code, dc_replace(base, time_limit_s=300), data)
            row["kind"] = kind
            rows.append(row)
            print(json.dumps(row), flush=True)
    honest = [r for r in rows if r["kind"] == "honest" and "budget_use" in r]
    refused = [r for r in honest if r["status"] == "STATUS_PROTOCOL_VIOLATION"]
    print(
        f"honest networks timed: {len(honest)}; refused by the epoch check: {len(refused)}; "
        "largest share of the budget used: pace "
        f"{max((r['budget_use'] for r in honest), default=0):.3f}, reference "
        f"{max((r['reference_use'] for r in honest), default=0):.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
