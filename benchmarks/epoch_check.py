"""The outside epoch check (services/evaluator/epoch.py): false positives and what it catches.

Runs each network through ``run_confined`` (the forked, confined train process and the score
processes; no bubblewrap needed for the timing) on the prepared digits set under a protocol
(``lemur-1epoch`` by default), and prints, per network, its status and the share of the epoch
budget its train phase used (the check refuses above 1). Honest networks: the first
``--seeds`` networks of the seed grammar (nasloop/corpus) and the LEMUR-style networks of
tests/lemur_nets.py; with ``--lemur-dir``, LEMUR's own networks (``*.py`` files, e.g.
nn-dataset's ``ab/nn/nn``; those that cannot run here are listed with their status). Attacks
(tests/adversarial/replay.py): the meter switched off through torch's global hook table, then
extra passes over kept batches (at the end, or earlier ones again with each new one), each batch
stepped on several times, a replay hidden in forward(), and the attack the reference step
invites (forward() slow outside learn()). Per network it prints both budgets' shares (the
reference budget's only where the reference step was taken) and the time per batch over one
reference step; at the end, per group of honest networks, how many were timed and refused, the
median and largest share of each budget, and every network that was not timed or not valid,
with its status and message.

LEMUR's sources are read as they are, except that the older API of nn-dataset's snapshots
(``Net(in_shape, out_shape, prm)``, ``train_setup(device, prm)``) is given the evaluator's
signatures (``current_api``). ``--input-size`` resizes the inputs (for networks that need more
than digits' 32 px) and ``--max-parameters`` raises the protocol's parameter limit (LEMUR's
classics under ``paper``'s 150 M), so that those networks' train phases can be timed too.

Usage: python benchmarks/epoch_check.py [--seeds 30] [--protocol lemur-1epoch] [--out FILE.json]
       [--kinds honest,attack] [--lemur-dir DIR] [--input-size N]
       [--max-parameters N] [--store DIR [--runs GLOB]]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

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


def group(name: str) -> str:
    """The group of honest networks a name belongs to: its prefix, or "run" for a candidate."""
    return "run" if "/" in name else name.split(":")[0]


# What LEMUR's copies of torchvision models import for their pretrained-weights helpers only.
WEIGHTS_HELPERS = {"WeightsEnum", "_ovewrite_named_param"}


def current_api(code: str) -> str:
    """LEMUR's older API (``Net(in_shape, out_shape, prm)``, ``train_setup(device, prm)``) in
    the form the evaluator calls (``Net(in_shape, out_shape, prm, device)``,
    ``train_setup(prm)``): ``device=None`` added after ``prm`` in ``__init__``, and
    ``train_setup``'s arguments turned into ``(self, prm, device=None)`` (on CPU, ``.to(None)``
    leaves a tensor where it is). An import of only the torchvision names that LEMUR's
    pretrained-weights helpers use (never called by ``Net``) becomes ``name = None``. Nothing
    else changes; other code is returned as it is (so is an import spread over several lines,
    or a ``prm`` with a default)."""
    edits: list[tuple[Any, ...]] = []  # (line, start column, end column in UTF-8 bytes, text)
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchvision"):
            names = [a.asname or a.name for a in node.names]
            if set(names) <= WEIGHTS_HELPERS and node.lineno == node.end_lineno:
                text = " = ".join([*names, "None"])
                edits.append((node.lineno, node.col_offset, node.end_col_offset, text))
        if not (isinstance(node, ast.ClassDef) and node.name == "Net"):
            continue
        for fn in node.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            args, names = fn.args.args, [a.arg for a in fn.args.args]
            if fn.name == "__init__" and names[1:4] == ["in_shape", "out_shape", "prm"]:
                if "device" not in names and len(fn.args.defaults) < len(args) - 3:  # prm: none
                    end = args[3].end_col_offset
                    edits.append((args[3].end_lineno, end, end, ", device=None"))
            elif fn.name == "train_setup" and names == ["self", "device", "prm"]:
                span = args[1].col_offset, args[2].end_col_offset  # one line in all 44
                edits.append((args[1].lineno, *span, "prm, device=None"))
    lines = code.splitlines(keepends=True)
    for line, a, b, text in sorted(edits, reverse=True):
        raw = lines[line - 1].encode()
        lines[line - 1] = (raw[:a] + text.encode() + raw[b:]).decode()
    return "".join(lines)


def summary(rows: list[dict]) -> None:
    """Per group: timed (the train phase ended and the reference step was taken), refused by
    the epoch check, the median and largest share of each budget over the timed; then each
    network that was not timed or did not end valid, and why."""
    for g in dict.fromkeys(group(r["name"]) for r in rows):
        mine = [r for r in rows if group(r["name"]) == g]
        timed = [r for r in mine if "reference_use" in r]
        refused = [r for r in mine if r["status"] == "STATUS_PROTOCOL_VIOLATION"]
        shares = {
            k: (statistics.median(v), max(v)) if (v := [r[k] for r in timed]) else (0, 0)
            for k in ("reference_use", "budget_use")
        }
        print(
            f"{g}: {len(mine)} networks, timed {len(timed)}, refused by the epoch check "
            f"{len(refused)}; reference budget used: median {shares['reference_use'][0]:.3f}, "
            f"max {shares['reference_use'][1]:.3f}; pace budget: median "
            f"{shares['budget_use'][0]:.3f}, max {shares['budget_use'][1]:.3f}"
        )
        for r in mine:
            if r not in timed or r["status"] not in VALID:
                print(f"    {r['name']}: {r['status']} {r.get('message', '')}")


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
    if led is not None and led.end is not None and led.reference_ns() > 0:  # reference taken
        out.update(
            reference_ms=round(led.reference_ns() / 1e6, 2),
            per_batch_over_reference=round(
                (led.train_ns() - led.first_ns()) / max(led.batches - 1, 1)
                / led.reference_ns(), 2,
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
    ap.add_argument("--lemur-dir", type=Path, help="a directory of LEMUR network sources")
    ap.add_argument("--input-size", type=int, default=0, help="resize inputs (0: the protocol's)")
    ap.add_argument("--max-parameters", type=int, default=0, help="0: the protocol's limit")
    ap.add_argument("--store", type=Path, help="a file:// store: its runs' valid candidates too")
    ap.add_argument("--runs", default="*", help="which runs of --store (a glob)")
    args = ap.parse_args()
    confine.Ledger = Recorded  # type: ignore[misc]  # the figures of each run
    with tempfile.TemporaryDirectory() as d:
        prepared = DatasetCache(d).get("digits")
        data = SandboxData.load(prepared.sandbox_file)
    base = protocols.named(EvaluatorConfig())[args.protocol]
    base = dc_replace(
        base,
        time_limit_s=300,
        input_size=args.input_size or base.input_size,
        max_parameters=args.max_parameters or base.max_parameters,
    )
    rows = []
    nets = [("good", GOOD_NET), ("good:own_loss", OWN_LOSS)]
    nets += [(f"seed:{n.id}", n.code) for n in generate(args.seeds)]
    nets += [(f"lemur:{k}", code) for k, (code, req) in NETS.items() if not req]
    if args.lemur_dir:
        files = sorted(f for f in args.lemur_dir.glob("*.py") if f.stem != "__init__")
        nets += [(f"lemur-nn:{f.stem}", current_api(f.read_text())) for f in files]
    if args.store:
        nets += valid_candidates(args.store, args.runs)
    for kind, items in (("honest", nets), ("attack", list(ATTACKS.items()))):
        if kind not in args.kinds.split(","):
            continue
        for name, code in items:
            row = run(name, code, base, data)
            row["kind"] = kind
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary([r for r in rows if r["kind"] == "honest"])
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
