"""Bootstrap LM benchmark for prompts with a parent (issue 22): how often the answers to the
loop's ``full`` and ``diff`` prompts are valid.

Parents of two kinds: ``grammar`` (held-out seed-grammar networks, drawn with a seed the corpus
did not use, with a made-up accuracy as the corpus's edit pairs have) and, with
``--parents-from-run RUN``, ``run`` (the valid candidates of a stored run's cycles 1..5). Each
parent is shown as the loop shows it (loop/plan.py ``with_parent`` on the ``local`` preset's
task, the plain template), in both modes; ``k`` answers each at T=0.8, sampled as
``bootstrap_bench.py`` samples plain prompts, and validated as it validates them (static checks
+ sandboxed forward probe). A diff answer's code is its ```diff block applied to the parent.

Usage: python benchmarks/edit_bench.py --work-dir .nasloop/bootstrap/bootstrap-edit
       [--parents 24] [-k 4] [--parents-from-run search-full-s0] [--store .nasloop/store]
The work directory's model is only read.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.bootstrap_bench import check_codes, tally  # noqa: E402
from nasloop.bootstrap import sample  # noqa: E402
from nasloop.bootstrap.pretrain import ACCURACY  # noqa: E402
from nasloop.corpus.build import count_parameters  # noqa: E402
from nasloop.corpus.grammar import generate  # noqa: E402
from nasloop.edits import DiffError, apply_diff  # noqa: E402
from nasloop.prompts import extract_code, extract_diff  # noqa: E402
from nasloop.store.local import LocalStore  # noqa: E402
from services.controller.loop.archive import Entry  # noqa: E402
from services.controller.loop.plan import with_parent  # noqa: E402
from services.controller.loop.state import load_candidates  # noqa: E402
from services.controller.runspec import load_spec, task_spec  # noqa: E402

MODES = ("full", "diff")


@dataclass
class Answer:
    kind: str  # grammar | run
    mode: str  # full | diff
    parent: str
    text: str
    code: str | None = None  # extracted (full) or the diff applied (diff)
    has_diff: bool = False
    status: str = ""


def grammar_parents(count: int, seed: int) -> list[Entry]:
    """``count`` grammar networks of ``seed`` (the corpus's is 0), accuracy drawn from the seed
    in the corpus's range for digits."""
    rng = random.Random(f"edit-bench-{seed}")
    return [
        Entry(net.id, 0, i, net.code, round(rng.uniform(*ACCURACY["digits"]), 4),
              count_parameters(net.code, trainable_only=True), 0, 0, ())
        for i, net in enumerate(generate(count, seed=seed))
    ]  # fmt: skip


def run_parents(store: Path, run: str, count: int, seed: int) -> list[Entry]:
    """``count`` of the valid candidates of ``run``'s cycles 1..5, drawn with ``seed``."""
    s = LocalStore(store.absolute())
    records = [r for c in range(1, 6) for r in load_candidates(s, run, c)]
    valid = [Entry.from_record(r) for r in records if r.evaluation and r.evaluation.valid]
    print(f"run {run}: {len(valid)} valid of {len(records)} candidates in cycles 1..5")
    return random.Random(seed).sample(valid, min(count, len(valid)))


def extract(a: Answer, parent: str) -> None:
    if a.mode == "full":
        a.code = extract_code(a.text)
        return
    diff = extract_diff(a.text)
    a.has_diff = diff is not None
    if diff is None:
        a.status = "NO_DIFF"
        return
    try:
        a.code = apply_diff(parent, diff)
    except DiffError:
        a.status = "DIFF_NOT_APPLIED"


def report(kind: str, mode: str, answers: list[Answer], parents: dict[str, str]) -> None:
    n = len(answers)
    ok = sum(a.status == "STATUS_OK" for a in answers)
    coded = [(parents[a.parent], a.code) for a in answers if a.code is not None]
    differ = sum(code.strip() != parent.strip() for parent, code in coded)
    ratios = [difflib.SequenceMatcher(None, parent, code).ratio() for parent, code in coded]
    line = f"{kind:7s} {mode}: valid {ok}/{n} = {100 * ok / n:.1f} %"
    if mode == "diff":
        has = sum(a.has_diff for a in answers)
        line += f"; diff block {has}/{n}, applies {len(coded)}/{n}"
    line += f"; code {len(coded)}/{n}, differ from the parent {differ}/{len(coded)}"
    if ratios:
        line += f", similarity to the parent mean {statistics.mean(ratios):.3f}"
    print(line)
    print(f"    statuses: {tally([a.status for a in answers])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work-dir", required=True, help="a finished bootstrap run (its model/)")
    ap.add_argument("--parents", type=int, default=24, help="per kind")
    ap.add_argument("-k", type=int, default=4, help="answers per parent and mode")
    ap.add_argument("--grammar-seed", type=int, default=1, help="not the corpus's (0)")
    ap.add_argument("--parents-from-run", help="a run in the store: its valid candidates too")
    ap.add_argument("--store", default=".nasloop/store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--sandbox", choices=["strict", "weak"], default="strict")
    ap.add_argument("--save-samples", help="write the answers with their statuses to this JSON")
    args = ap.parse_args()

    kinds = {"grammar": grammar_parents(args.parents, args.grammar_seed)}
    if args.parents_from_run:
        kinds["run"] = run_parents(Path(args.store), args.parents_from_run, args.parents, args.seed)
    task = task_spec(load_spec("local"))
    specs, answers = [], []
    for kind, parents in kinds.items():
        for mode in MODES:
            for p in parents:
                specs.append(with_parent(task, p, mode))
                answers += [Answer(kind, mode, p.id, "") for _ in range(args.k)]
    t0 = time.perf_counter()
    texts = sample(Path(args.work_dir) / "model", specs, args.k, args.temperature, seed=args.seed)
    print(
        f"sampling (transformers generate, batch 16, T={args.temperature}): {len(texts)} answers "
        f"({len(specs)} prompts x {args.k}) in {time.perf_counter() - t0:.0f} s"
    )
    codes = {p.id: p.code for ps in kinds.values() for p in ps}
    for a, text in zip(answers, texts, strict=True):
        a.text = text
        extract(a, codes[a.parent])
    checked = [a for a in answers if not a.status]
    statuses = check_codes([a.code for a in checked], args.sandbox)
    for a, status in zip(checked, statuses, strict=True):
        a.status = status
    if args.save_samples:
        Path(args.save_samples).write_text(json.dumps([asdict(a) for a in answers], indent=1))
    for kind in kinds:
        for mode in MODES:
            report(kind, mode, [a for a in answers if (a.kind, a.mode) == (kind, mode)], codes)


if __name__ == "__main__":
    main()
