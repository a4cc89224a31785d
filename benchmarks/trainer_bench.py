"""Trainer benchmark (issue target on the 2-core CI machine): tokens/s of the trainer's LoRA loop
vs a bare peft training loop on the same data and model (target ratio ≥ 0.9).

The model is a Llama of the bootstrap model's default size (about 5M parameters, random
weights: speed does not depend on them) unless --model names a Hugging Face directory. LoRA
r=32 on all projections (DESIGN.md's paper settings), fp32, batch 4 x 2, the same pairs.

Usage: python benchmarks/trainer_bench.py [--model DIR] [--pairs 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from candidates import GOOD_NET  # noqa: E402

from nasloop.lora import DEFAULT_TARGETS, LoraSettings  # noqa: E402
from nasloop.prompts import encode_pair, pad_batch  # noqa: E402
from nasloop.records import TrainingPair  # noqa: E402
from services.trainer.sft import train_lora  # noqa: E402
from services.trainer.spec import TrainSpec  # noqa: E402

SPEC = TrainSpec(
    job_id="bench", base_model="bench", pairs_key="-", pairs_sha256="", output_prefix="-",
    lora=LoraSettings(32, 32.0, 0.05, DEFAULT_TARGETS), lr=1e-4, epochs=1, batch_size=4,
    grad_accum=2, seed=0, max_seq_len=1024,
)  # fmt: skip


def build_model(dest: Path) -> Path:
    """A ~5M-parameter Llama with a byte-level BPE tokenizer (random weights)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [GOOD_NET] * 8,
        trainers.BpeTrainer(
            vocab_size=2048,
            special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>"
    )
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def make_pairs(n: int) -> list[TrainingPair]:
    rng = random.Random(0)
    return [
        TrainingPair(
            f"Task: image classification on digits, input (16, 3, 32, 32), 10 classes.\n#{i}\n",
            "```python\n" + GOOD_NET.replace("16", str(rng.choice([8, 12, 24, 32]))) + "\n```",
        )
        for i in range(n)
    ]


def bare_loop(model_dir: Path, pairs: list[TrainingPair]) -> float:
    """The textbook peft loop on the same examples and batches: tokens per second."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SPEC.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=SPEC.lora.r, lora_alpha=SPEC.lora.alpha, lora_dropout=SPEC.lora.dropout,
                   target_modules=list(SPEC.lora.target_modules), task_type="CAUSAL_LM"),
    )  # fmt: skip
    examples = [encode_pair(tok, p.prompt, p.completion, SPEC.max_seq_len) for p in pairs]
    order = list(range(len(examples)))
    random.Random(SPEC.seed).shuffle(order)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=SPEC.lr)
    model.train()
    tokens = 0
    t0 = time.perf_counter()
    micro = [order[i : i + SPEC.batch_size] for i in range(0, len(order), SPEC.batch_size)]
    for start in range(0, len(micro), SPEC.grad_accum):
        for m in micro[start : start + SPEC.grad_accum]:
            batch = pad_batch([examples[i] for i in m], tok.pad_token_id, torch.device("cpu"))
            (model(**batch).loss / SPEC.grad_accum).backward()
            tokens += int(batch["attention_mask"].sum())
        opt.step()
        opt.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="a Hugging Face model directory (default: built here)")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}, {threads} threads")
    with tempfile.TemporaryDirectory(prefix="nasloop-trainbench-") as tmp:
        model_dir = Path(args.model) if args.model else build_model(Path(tmp) / "model")
        n_params = sum(
            p.numel()
            for p in __import__("transformers")
            .AutoModelForCausalLM.from_pretrained(model_dir)
            .parameters()
        )
        pairs = make_pairs(args.pairs)
        ours, bare, ratios = [], [], []
        for i in range(args.repeats):  # interleaved against the machine's speed swings
            r = train_lora(SPEC, model_dir, pairs, Path(tmp) / f"out{i}")
            b = bare_loop(model_dir, pairs)
            ours.append(r.tokens_per_second)
            bare.append(b)
            ratios.append(r.tokens_per_second / b)
        print(
            f"LoRA r=32 on {n_params / 1e6:.1f}M-parameter Llama, {len(pairs)} pairs, batch 4x2: "
            f"trainer {statistics.median(ours):,.0f} tokens/s, bare peft loop "
            f"{statistics.median(bare):,.0f} tokens/s; ratio {statistics.median(ratios):.3f} "
            f"(all: {', '.join(f'{x:.3f}' for x in ratios)})  [target ≥ 0.9]"
        )


if __name__ == "__main__":
    main()
