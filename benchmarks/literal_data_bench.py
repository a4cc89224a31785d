"""Literal data in honest networks, against the policy's limit (issue 18, item 3).

For each source of honest networks, the literal data the policy stage counts
(services/evaluator/literals.py: strings, bytes and numbers after folding simple expressions)
and how many the static stages refuse:

* the seed corpus (nasloop/corpus: the grammar's networks, what the bootstrap LM learns from);
* the LEMUR-style networks of the tests (tests/lemur_nets.py);
* with ``--lemur-dir``, LEMUR's own networks (``*.py`` files, e.g. nn-dataset's ``ab/nn/nn``);
* with ``--store``, every candidate of every run in a ``file://`` store whose evaluation ended
  STATUS_OK or STATUS_LOW_ACCURACY (the valid candidates of real runs).

Usage: python benchmarks/literal_data_bench.py [--corpus 2000] [--lemur-dir DIR] [--store DIR]
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.corpus.build import seed_corpus  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import literals  # noqa: E402
from services.evaluator.policy import MAX_LITERAL_BYTES, static_check  # noqa: E402

VALID = ("STATUS_OK", "STATUS_LOW_ACCURACY")


def run_candidates(store_dir: Path) -> list[tuple[str, str]]:
    from nasloop.records import loads_records

    out = []
    for path in sorted(store_dir.glob("runs/*/**/candidates.jsonl")):
        for r in loads_records(path.read_bytes()):
            if r.evaluation is not None and r.evaluation.status in VALID and r.code:
                out.append((r.id, r.code))
    return out


def report(name: str, nets: Iterable[tuple[str, str]]) -> None:
    max_code = EvaluatorConfig().max_code_bytes
    sizes, refused, seconds = [], [], 0.0
    for net_id, code in nets:
        t0 = time.perf_counter()
        sizes.append((literals.measure(ast.parse(code)).total, net_id))
        seconds += time.perf_counter() - t0
        r = static_check(code, max_code)
        if r.status != common.STATUS_OK:
            refused.append(f"{net_id}: {common.Status.Name(r.status)} {r.message}")
    if not sizes:
        print(f"{name}: none")
        return
    sizes.sort()
    values = [s for s, _ in sizes]
    pct = {q: values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.99)}
    print(
        f"{name}: n={len(values)} literal bytes median {pct[0.5]}, p99 {pct[0.99]}, "
        f"max {values[-1]} ({sizes[-1][1]}); over {MAX_LITERAL_BYTES}: "
        f"{sum(v > MAX_LITERAL_BYTES for v in values)}; refused by the static stages: "
        f"{len(refused)}; {1000 * seconds / len(values):.2f} ms to measure one"
    )
    for line in refused[:10]:
        print("   ", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=int, default=2000, help="seed-corpus networks to generate")
    ap.add_argument("--lemur-dir", type=Path, help="a directory of LEMUR network sources")
    ap.add_argument("--store", type=Path, help="a file:// store's directory with runs/")
    args = ap.parse_args()
    from lemur_nets import NETS

    print(f"limit: {MAX_LITERAL_BYTES} bytes of literal data")
    report("seed corpus", ((r.id, r.code) for r in seed_corpus(args.corpus, seed=0)))
    report("LEMUR-style (tests)", ((n, code) for n, (code, _) in NETS.items()))
    if args.lemur_dir:
        files = sorted(args.lemur_dir.glob("*.py"))
        report("LEMUR networks", ((f.stem, f.read_text()) for f in files if f.stem != "__init__"))
    if args.store:
        report("valid run candidates", run_candidates(args.store))


if __name__ == "__main__":
    main()
