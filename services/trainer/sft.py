"""LoRA supervised fine-tuning with peft: the loss covers the completion tokens only.

One function, :func:`train_lora`, that the job runner calls and the benchmark compares with a
bare peft loop. It reports progress through a callback and stops between micro-batches when
``cancelled`` is set.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nasloop.prompts import PromptTooLongError, encode_pair, pad_batch
from nasloop.records import TrainingPair
from nasloop.v1 import trainer_pb2 as pb
from services.trainer.spec import TrainSpec


class Cancelled(Exception):
    """The job was cancelled; nothing was saved."""


@dataclass
class TrainResult:
    initial_loss: float
    final_loss: float
    steps: int
    train_tokens: int
    tokens_per_second: float
    train_seconds: float
    examples: int


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def dtype_for(precision: int, device: torch.device) -> torch.dtype:
    if precision == pb.PRECISION_FP32 or device.type == "cpu":
        return torch.float32
    return torch.bfloat16


def load_model(
    model_dir: Path, spec: TrainSpec, parent_dir: Path | None, device: torch.device
) -> tuple[Any, Any]:
    """The base model with a trainable LoRA adapter (fresh, or the parent's, continued)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    kwargs: dict[str, Any] = {"dtype": dtype_for(spec.precision, device)}
    if spec.precision == pb.PRECISION_QLORA_4BIT:
        if device.type != "cuda":
            raise ValueError("4-bit QLoRA needs a GPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4"
        )
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if spec.precision != pb.PRECISION_QLORA_4BIT:
        model.to(device)
    if parent_dir is not None:
        model = PeftModel.from_pretrained(model, parent_dir, is_trainable=True)
    else:
        settings: dict[str, Any] = {  # lora_alpha a float, as in the run spec (peft says int)
            "r": spec.lora.r,
            "lora_alpha": spec.lora.alpha,
            "lora_dropout": spec.lora.dropout,
            "target_modules": list(spec.lora.target_modules),
        }
        model = get_peft_model(model, LoraConfig(**settings, task_type="CAUSAL_LM"))
    return model, tokenizer


def train_lora(
    spec: TrainSpec,
    model_dir: Path,
    pairs: list[TrainingPair],
    out_dir: Path,
    *,
    parent_dir: Path | None = None,
    device: torch.device | None = None,
    on_progress: Callable[[pb.JobProgress], None] | None = None,
    cancelled: threading.Event | None = None,
    log_every: int = 5,
) -> TrainResult:
    device = device or pick_device("auto")
    torch.manual_seed(spec.seed)
    model, tokenizer = load_model(model_dir, spec, parent_dir, device)
    max_len = spec.max_seq_len or int(getattr(model.config, "max_position_embeddings", 2048))
    examples = []
    for pair in pairs:
        try:
            examples.append(encode_pair(tokenizer, pair.prompt, pair.completion, max_len))
        except PromptTooLongError:
            continue  # counted below: examples < pairs
    if not examples:
        raise ValueError(f"every prompt is longer than max_seq_len ({max_len} tokens)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr)
    per_epoch = math.ceil(len(examples) / (spec.batch_size * spec.grad_accum))
    total = per_epoch * spec.epochs
    rng = random.Random(spec.seed)
    model.train()
    step, tokens, window, losses = 0, 0, [], []
    t0 = time.perf_counter()
    for epoch in range(spec.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        micro = [order[i : i + spec.batch_size] for i in range(0, len(order), spec.batch_size)]
        for start in range(0, len(micro), spec.grad_accum):
            group = micro[start : start + spec.grad_accum]
            answer_tokens = sum(
                sum(lbl != -100 for lbl in examples[i]["labels"]) for m in group for i in m
            )
            step_loss = 0.0
            for m in group:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled
                batch = pad_batch([examples[i] for i in m], pad_id, device)
                n = int((batch["labels"] != -100).sum())
                loss = model(**batch).loss
                # Weight each micro-batch by its answer tokens: the step's loss is the mean
                # over all answer tokens of the step, however they are split.
                (loss * n / answer_tokens).backward()
                step_loss += float(loss.detach()) * n / answer_tokens
                tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss)
            window.append(step_loss)
            if on_progress is not None and (step % log_every == 0 or step == total):
                elapsed = time.perf_counter() - t0
                on_progress(
                    pb.JobProgress(
                        step=step,
                        total_steps=total,
                        epoch=epoch,
                        loss=sum(window) / len(window),
                        tokens_per_second=tokens / elapsed,
                        elapsed_s=elapsed,
                        eta_s=elapsed / step * (total - step),
                    )
                )
                window = []
    seconds = time.perf_counter() - t0
    if cancelled is not None and cancelled.is_set():
        raise Cancelled
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return TrainResult(
        initial_loss=losses[0],
        final_loss=sum(losses[-max(1, len(losses) // 10) :]) / max(1, len(losses) // 10),
        steps=step,
        train_tokens=tokens,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        train_seconds=seconds,
        examples=len(examples),
    )
