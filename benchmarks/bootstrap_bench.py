"""Bootstrap LM benchmark (targets for the default size on 2 cores):

* train time of ``nasloop bootstrap-model`` (corpus, tokenizer, pretraining; target ≤ 15 min)
  and training tokens/s;
* valid rate of its samples at temperature 0.8: the share whose extracted code passes the static
  checks and the sandboxed forward probe (the evaluator's "validate" mode; target ≥ 30 %), with
  the statuses where the rest stopped, and how many valid samples copy a corpus network.

Usage: python benchmarks/bootstrap_bench.py [--size default] [--samples 96] [--work-dir DIR]
A work directory that already holds a trained model is reused (no training; nothing is written
there); the train figures are then those of the run that trained it (from its run log).
``benchmarks/edit_bench.py`` measures the answers to prompts with a parent.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

from nasloop.bootstrap import SIZES, pretrain, sample  # noqa: E402
from nasloop.config import EvaluatorConfig  # noqa: E402
from nasloop.prompts import extract_code  # noqa: E402
from nasloop.v1 import common_pb2 as common  # noqa: E402
from services.evaluator import protocols  # noqa: E402
from services.evaluator.datasets import DatasetCache  # noqa: E402
from services.evaluator.policy import static_check  # noqa: E402
from services.evaluator.pool import LocalExecutor  # noqa: E402
from services.evaluator.task import Task  # noqa: E402

BUDGETS = (100_000, 200_000, 500_000, 1_000_000)


def train(args: argparse.Namespace, work: Path) -> list[str]:
    from nasloop.corpus.grammar import generate

    size = SIZES[args.size]
    log = work / "bench.json"
    t0 = time.perf_counter()
    if args.corpus:
        codes = json.loads(Path(args.corpus).read_text())[: args.networks or size.networks]
    else:
        codes = [n.code for n in generate(args.networks or size.networks, seed=args.seed)]
    t_corpus = time.perf_counter() - t0
    if (work / "model" / "model.safetensors").exists():
        done = log if log.exists() else work / "run.json"  # a run of `nasloop bootstrap-model`
        print(f"reusing the finished run in {work}: {' '.join(done.read_text().split())}")
        return codes
    r = pretrain(codes, work, size, steps=args.steps, seed=args.seed)
    total = time.perf_counter() - t0
    figures = {
        "size": size.name,
        "parameters": r.parameters,
        "networks": len(codes),
        "examples": r.examples,
        "truncated": r.truncated,
        "steps": r.steps,
        "resumed_from": r.resumed_from,
        "corpus_s": round(t_corpus, 1),
        "train_s": round(r.train_seconds, 1),
        "total_s": round(total, 1),
        "tokens_per_s": round(r.tokens_per_s),
        "loss_first10": round(sum(r.losses[:10]) / 10, 3),
        "loss_last10": round(sum(r.losses[-10:]) / 10, 3),
    }
    log.write_text(json.dumps(figures))
    print(
        f"train ({size.name}, {r.parameters:,} parameters, {len(codes)} networks, {r.steps} "
        f"steps{f', resumed at {r.resumed_from}' if r.resumed_from else ''}): total "
        f"{total / 60:.1f} min (corpus {t_corpus:.0f} s, optimisation {r.train_seconds:.0f} s), "
        f"{r.tokens_per_s:,.0f} tokens/s, loss {figures['loss_first10']} → "
        f"{figures['loss_last10']}, {r.truncated} answers truncated  [target ≤ 15 min]"
    )
    return codes


def specs() -> list[common.TaskSpec]:
    return [
        common.TaskSpec(
            task="img-classification",
            dataset=ds,
            in_shape=(16, 3, 32, 32),
            out_shape=(10,),
            parameter_budget=b,
        )
        for ds in ("digits", "cifar10")
        for b in BUDGETS
    ]


def check_codes(codes: Sequence[str | None], sandbox: Literal["strict", "weak"]) -> list[str]:
    """Each code's status: the static checks, then the sandboxed forward probe (the evaluator's
    "validate" mode, on digits); ``STATUS_NO_CODE`` for None."""
    cfg = EvaluatorConfig(workers=1, sandbox=sandbox)
    proto = protocols.named(cfg)[protocols.DEFAULT]
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nasloop-bootbench-") as tmp:
        datasets = DatasetCache(Path(tmp) / "data")
        prepared = datasets.get("digits")
        ex = LocalExecutor(cfg, datasets.data_dir)
        ex.start()
        try:
            for i, code in enumerate(codes):
                if code is None:
                    out.append("STATUS_NO_CODE")
                    continue
                report = static_check(code, cfg.max_code_bytes)
                if report.status == common.STATUS_OK:
                    task = Task(f"s{i}", code, proto, "validate")
                    report, _ = ex.run(task, prepared, threading.Event())
                out.append(common.Status.Name(report.status))
        finally:
            ex.close()
    return out


def tally(statuses: Sequence[str]) -> str:
    """``OK 3, RUNTIME_ERROR 2, ...``, most common first."""
    counts = collections.Counter(statuses).most_common()
    return ", ".join(f"{k.removeprefix('STATUS_')} {v}" for k, v in counts)


def validate(texts: list[str], sandbox: Literal["strict", "weak"], corpus: set[str]) -> None:
    codes = [extract_code(t) for t in texts]
    statuses = check_codes(codes, sandbox)
    valid_codes = [c for c, s in zip(codes, statuses, strict=True) if c and s == "STATUS_OK"]
    n = len(texts)
    ok = len(valid_codes)
    copies = sum(c.strip() in corpus for c in valid_codes)
    print(
        f"valid rate (static checks + sandboxed forward probe, {sandbox} sandbox): {ok}/{n} = "
        f"{100 * ok / n:.1f} %  [target ≥ 30 %]; distinct valid {len(set(valid_codes))}, "
        f"exact copies of a corpus network {copies}"
    )
    print(f"statuses: {tally(statuses)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--networks", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--corpus", help="a JSON list of network codes instead of the grammar's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=96, help="rounded up to a multiple of 8")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--work-dir", help="default: a temporary directory")
    ap.add_argument("--sandbox", choices=["strict", "weak"], default="strict")
    ap.add_argument("--save-samples", help="write the sampled answers to this JSON file")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {threads} threads")
    with tempfile.TemporaryDirectory(prefix="nasloop-bootstrap-") as tmp:
        work = Path(args.work_dir or tmp)
        codes = train(args, work)
        per_spec = -(-args.samples // len(specs()))
        t0 = time.perf_counter()
        texts = sample(work / "model", specs(), per_spec, args.temperature, seed=args.seed)
        wall = time.perf_counter() - t0
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(work / "model")
        generated = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        print(
            f"sampling (transformers generate, batch 16, T={args.temperature}): {len(texts)} "
            f"answers in {wall:.0f} s, {generated / wall:,.0f} generated tokens/s"
        )
        if args.save_samples:
            Path(args.save_samples).write_text(json.dumps(texts, indent=1))
        validate(texts, args.sandbox, {c.strip() for c in codes})


if __name__ == "__main__":
    main()
