"""Pretraining the bootstrap LM from scratch on prompt→code pairs built from the seed corpus.

Besides a plain prompt per network, a share of the pairs (the size's ``edit_full_share`` and
``edit_diff_share``) show a parent network and answer with a child made by a grammar mutation,
whole or as a diff, so that the model can also edit (see :func:`corpus_pairs`).

A run lives in a work directory: ``run.json`` (its settings), ``tokenizer/``, ``checkpoint.pt``
(model, optimizer, schedule, step, RNG; written atomically every ``checkpoint_every`` steps) and
``model/`` (the final Hugging Face directory). Rerunning with the same settings resumes from the
checkpoint; the batch order is a function of the seed, so a resumed run is the run it continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nasloop.bootstrap.model import SIZES, Size, build_model, parameter_count, publish_model
from nasloop.bootstrap.tokenizer import train_tokenizer
from nasloop.corpus.build import IN_SHAPE, OUT_SHAPE, count_parameters
from nasloop.corpus.mutations import children
from nasloop.edits import make_diff
from nasloop.prompts import (
    PromptTooLongError,
    encode_pair,
    pad_batch,
    render_answer,
    render_diff,
    render_prompt,
)
from nasloop.store.base import ObjectStore
from nasloop.v1 import common_pb2

DATASETS = ("digits", "cifar10")
# The made-up first-epoch accuracy of an edit pair's parent, drawn uniformly per dataset.
ACCURACY = {"digits": (0.5, 0.99), "cifar10": (0.2, 0.7)}
CHECKPOINT = "checkpoint.pt"


class RunMismatch(RuntimeError):
    """The work directory holds a run with other settings."""


def parameter_budget(code: str) -> int:
    """Trainable parameters rounded up to 1, 2 or 5 times 10^k; 0 if the net cannot be built.

    Seed code is ours (the grammar's), so it is built in-process, on the meta device.
    """
    return _round_up(count_parameters(code, trainable_only=True))


def _round_up(count: int) -> int:
    if count == 0:
        return 0
    scale = 10 ** max(0, len(str(max(count, 1))) - 1)
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= count)


def task_spec(
    code: str, dataset: str, parent: common_pb2.Parent | None = None, parameters: int = 0
) -> common_pb2.TaskSpec:
    """The task whose answer is ``code``: its budget is the answer's parameter count rounded up
    (``parameters`` where the caller has counted them)."""
    return common_pb2.TaskSpec(
        task="img-classification",
        dataset=dataset,
        in_shape=IN_SHAPE,
        out_shape=OUT_SHAPE,
        parameter_budget=_round_up(parameters) if parameters else parameter_budget(code),
        parent=parent,
    )


def corpus_pairs(
    codes: Sequence[str],
    seed: int,
    full_share: float = 0.0,
    diff_share: float = 0.0,
    tally: dict[str, list[int]] | None = None,
) -> list[tuple[str, str]]:
    """(prompt, answer) pairs: first a plain prompt per network (the dataset named in each drawn
    by seed), then edit pairs, so that they make ``full_share`` and ``diff_share`` of all pairs.

    An edit pair's prompt carries a parent (a corpus network: its code and trainable parameters,
    and a made-up first-epoch accuracy drawn from the seed in :data:`ACCURACY`, since the
    grammar's networks are never trained) and asks for an improved module (full) or a diff
    (diff); the answer is a child by one of the grammar mutations
    (:mod:`nasloop.corpus.mutations`), whole or as the unified diff of the parent, and the
    prompt's budget is the child's parameters rounded up, as a plain prompt's is its answer's.
    ``tally[kind]`` counts the mutations [tried, succeeded].
    """
    rng = random.Random(seed)
    pairs = [
        (render_prompt(task_spec(code, rng.choice(DATASETS)), "plain"), render_answer(code))
        for code in codes
    ]
    edit_share = full_share + diff_share
    count = round(len(codes) * edit_share / (1 - edit_share)) if edit_share else 0
    rng = random.Random(f"edits-{seed}")  # the plain pairs' draws stay as they were
    for parent, parameters, child in children(codes, count, rng, tally):
        dataset = rng.choice(DATASETS)
        diff = rng.random() < diff_share / edit_share
        shown = common_pb2.Parent(
            code=parent,
            accuracy=round(rng.uniform(*ACCURACY[dataset]), 4),
            parameters=parameters,
            mode=common_pb2.EDIT_MODE_DIFF if diff else common_pb2.EDIT_MODE_FULL,
        )
        spec = task_spec(child.code, dataset, shown, child.parameters)
        answer = render_diff(make_diff(parent, child.code)) if diff else render_answer(child.code)
        pairs.append((render_prompt(spec, "plain"), answer))
    return pairs


def _lr_factor(step: int, size: Size, steps: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    warmup = min(size.warmup_steps, max(1, steps // 10))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batch_plan(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of example indices: epochs of shuffled, length-grouped batches."""
    rng = random.Random(seed)
    plan: list[list[int]] = []
    group = batch_size * 16
    while len(plan) < steps:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        epoch: list[list[int]] = []
        for g in range(0, len(order), group):
            chunk = sorted(order[g : g + group], key=lambda i: lengths[i])
            epoch += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        plan += epoch
    return plan[:steps]


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class PretrainResult:
    model_dir: Path
    size: str
    steps: int
    resumed_from: int  # 0 for a fresh run
    parameters: int
    examples: int
    truncated: int  # answers cut to fit max_length (kept, without eos)
    losses: list[float] = field(default_factory=list)  # per step, the whole run
    train_seconds: float = 0.0  # this invocation's optimisation time
    tokens: int = 0  # non-pad tokens this invocation trained on
    edit_pairs: int = 0  # examples with a parent in the prompt (those that fit max_length)
    mutations: dict[str, list[int]] = field(default_factory=dict)  # kind: [tried, succeeded]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def pretrain(
    codes: Sequence[str],
    work_dir: str | Path,
    size: Size | str = "tiny",
    *,
    steps: int | None = None,
    seed: int = 0,
    stop_at: int | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Train (or resume) the bootstrap LM on ``codes``; the model ends up in ``work_dir/model``.

    ``stop_at`` ends this invocation after that step (with a checkpoint): a later call with the
    same settings resumes there.
    """
    size = SIZES[size] if isinstance(size, str) else size
    steps = steps or size.steps
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus_sha = hashlib.sha256("\0".join(codes).encode()).hexdigest()
    settings = {"size": asdict(size), "steps": steps, "seed": seed, "corpus_sha256": corpus_sha}
    run_file = work / "run.json"
    if run_file.exists():
        if json.loads(run_file.read_text()) != settings:
            raise RunMismatch(
                f"{work} holds a run with other settings (size, steps, seed or corpus); "
                "use another work directory or delete it"
            )
    else:
        run_file.write_text(json.dumps(settings, indent=2, sort_keys=True))

    tally: dict[str, list[int]] = {}
    pairs = corpus_pairs(codes, seed, size.edit_full_share, size.edit_diff_share, tally)
    tok_dir = work / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(tok_dir)
    else:
        texts = [t for pair in pairs for t in pair]
        tokenizer = train_tokenizer(texts, size.vocab_size, size.context)
        part = work / ".tokenizer.part"
        shutil.rmtree(part, ignore_errors=True)
        tokenizer.save_pretrained(part)
        os.replace(part, tok_dir)

    examples, truncated, edits = [], 0, 0
    for i, (prompt, answer) in enumerate(pairs):
        try:
            enc = encode_pair(tokenizer, prompt, answer, size.max_length)
        except PromptTooLongError:
            continue
        if i >= len(codes) and enc.truncated:
            continue  # a cut child or diff is no edit to learn; a cut plain answer stays
        truncated += enc.truncated
        edits += i >= len(codes)
        examples.append(enc)
    if not examples:
        raise ValueError("no training examples: the corpus is empty or every prompt is too long")

    torch.manual_seed(seed)
    model = build_model(size, tokenizer)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=size.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, size, steps))
    start, losses = 0, []
    ckpt_path = work / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, losses = ckpt["step"], ckpt["losses"]
        torch.set_rng_state(ckpt["torch_rng"])
        random.setstate(ckpt["python_rng"])

    def checkpoint(step: int) -> None:
        _save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "losses": losses,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            ckpt_path,
        )

    plan = _batch_plan([len(e["input_ids"]) for e in examples], size.batch_size, steps, seed)
    end = min(steps, stop_at) if stop_at is not None else steps
    result = PretrainResult(
        model_dir=work / "model",
        size=size.name,
        steps=steps,
        resumed_from=start,
        parameters=parameter_count(model),
        examples=len(examples),
        truncated=truncated,
        edit_pairs=edits,
        mutations=tally,
    )
    model.train()
    bar = tqdm(
        total=steps,
        initial=start,
        desc=f"bootstrap-{size.name}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    for step in range(start, end):
        batch = pad_batch([examples[i] for i in plan[step]], tokenizer.pad_token_id)
        # Right padding under a causal mask: no real token attends to a pad, and pads carry no
        # labels, so no attention mask is needed; without one SDPA takes its fast causal path.
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach().item())
        result.tokens += int(batch["attention_mask"].sum())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if (step + 1) % size.checkpoint_every == 0 or step + 1 == end:
            checkpoint(step + 1)
    bar.close()
    result.train_seconds = time.perf_counter() - t0
    result.losses = list(losses)
    if end == steps:
        model.save_pretrained(result.model_dir)
        tokenizer.save_pretrained(result.model_dir)
    return result


def with_edit_shares(size: Size, full: float, diff: float) -> Size:
    """``size`` with other shares of edit pairs (whole answers, diffs)."""
    if min(full, diff) < 0 or full + diff >= 1:
        raise ValueError(f"edit shares {full} and {diff}: each at least 0, together below 1")
    return replace(size, edit_full_share=full, edit_diff_share=diff)


def bootstrap_model(
    store: ObjectStore,
    name: str,
    size: str | Size = "default",
    *,
    networks: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    work_dir: str | Path | None = None,
    codes: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[PretrainResult, dict[str, Any]]:
    """Build the corpus, pretrain (or resume) and publish ``models/<name>/``; return both."""
    spec = SIZES[size] if isinstance(size, str) else size
    if codes is None:
        from nasloop.corpus.grammar import generate

        codes = [net.code for net in generate(networks or spec.networks, seed=seed)]
    work = Path(work_dir) if work_dir else Path(".nasloop/bootstrap") / name
    result = pretrain(codes, work, spec, steps=steps, seed=seed, progress=progress)
    meta = {
        "kind": "bootstrap-lm",
        "architecture": "LlamaForCausalLM",
        "size": spec.name,
        "edit_shares": [spec.edit_full_share, spec.edit_diff_share],
        "parameters": result.parameters,
        "networks": len(codes),
        "examples": result.examples,
        "steps": result.steps,
        "seed": seed,
        "final_loss": round(sum(result.losses[-10:]) / len(result.losses[-10:]), 4),
        "template": "plain",
        "edit_pairs": result.edit_pairs,
        "mutations": result.mutations,
    }
    manifest = publish_model(store, name, result.model_dir, meta)
    return result, manifest
