"""Prompts, answers and code extraction: the one definition the generator and the trainer share.

A training pair and a generation request must see byte-identical prompts, so both render them
here. Templates: ``plain`` (a compact text prompt for the bootstrap LM, whose context is short)
and ``instruct`` (system + user chat messages rendered by the model's own chat template).
"""

from __future__ import annotations

import re
from typing import Any

from nasloop.v1 import common_pb2

TEMPLATES = ("plain", "instruct")

SYSTEM_PROMPT = (
    "You are an expert deep-learning engineer. You design novel, efficient PyTorch "
    "convolutional networks and answer with one complete Python module in a single "
    "```python code block, without explanations."
)

_API = (
    "The module defines supported_hyperparameters() returning a set of the names it uses, and "
    "class Net(nn.Module) with __init__(self, in_shape, out_shape, prm, device), "
    "train_setup(self, prm) that sets self.criteria and self.optimizer, learn(self, train_data) "
    "that trains one epoch over (inputs, labels) batches, and forward(self, x). "
    "prm holds lr, momentum, dropout (in [0, 1]) and batch."
)

_PLAIN_API = (
    "API: supported_hyperparameters() -> set; class Net(nn.Module): "
    "__init__(self, in_shape, out_shape, prm, device), train_setup(self, prm) sets "
    "self.criteria, self.optimizer; learn(self, train_data) one epoch; forward(self, x). "
    "prm: lr, momentum, dropout, batch."
)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3"}
_DIFF_TAGS = {"diff", "patch"}
DIFF_HEADER = ("--- a/net.py", "+++ b/net.py")  # the file names a diff answer patches


def _shape(dims: Any) -> str:
    dims = tuple(int(d) for d in dims)
    return "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"


def _task_name(spec: common_pb2.TaskSpec) -> str:
    return spec.task or "img-classification"


def _plain(spec: common_pb2.TaskSpec) -> str:
    lines = [
        f"### Task: {_task_name(spec)} on {spec.dataset or 'an image dataset'}",
        f"in_shape {_shape(spec.in_shape)}, out_shape {_shape(spec.out_shape)}"
        + (f", at most {spec.parameter_budget} parameters" if spec.parameter_budget > 0 else ""),
        _PLAIN_API,
    ]
    if spec.reference_accuracy > 0:
        lines.append(f"Beat accuracy {spec.reference_accuracy:.4f}.")
    if spec.reference_code.strip():
        lines.append("Reference:\n" + render_answer(spec.reference_code))
    if spec.HasField("parent"):
        p = spec.parent
        lines.append(f"### Parent: accuracy {p.accuracy:.4f}, {p.parameters} parameters")
        lines.append(render_answer(p.code))
        lines.append(f"Goal: {_goal(spec)}.")
        if p.mode == common_pb2.EDIT_MODE_DIFF:
            lines.append("### Diff:\n")
            return "\n".join(lines)
    lines.append("### Code:\n")
    return "\n".join(lines)


def _goal(spec: common_pb2.TaskSpec) -> str:
    """What a child of ``spec.parent`` should reach: more accuracy within the task's parameter
    budget, or within the parent's size where the task states none."""
    p = spec.parent
    limit = spec.parameter_budget if spec.parameter_budget > 0 else p.parameters
    return f"accuracy above {p.accuracy:.4f} with at most {limit} parameters"


def _user_message(spec: common_pb2.TaskSpec) -> str:
    parts = [
        f"Task: {_task_name(spec)} on the {spec.dataset or 'given'} dataset.",
        f"Input shape (B, C, H, W): {_shape(spec.in_shape)}. "
        f"Output shape (num_classes,): {_shape(spec.out_shape)}.",
    ]
    if spec.parameter_budget > 0:
        parts.append(f"Use at most {spec.parameter_budget} trainable parameters.")
    parts.append(_API)
    if spec.reference_accuracy > 0:
        parts.append(
            f"A reference network reaches {spec.reference_accuracy:.4f} test accuracy after one "
            "epoch; design a new architecture that beats it."
        )
    if spec.reference_code.strip():
        parts.append("Reference network:\n" + render_answer(spec.reference_code))
    if not spec.HasField("parent"):
        parts.append("Answer with the complete module in one ```python block.")
        return "\n\n".join(parts)
    p = spec.parent
    parts.append(
        f"Parent network ({p.accuracy:.4f} test accuracy after one epoch, {p.parameters} "
        "trainable parameters):\n" + render_answer(p.code)
    )
    parts.append(f"Improve on the parent. Goal: {_goal(spec)}.")
    if p.mode == common_pb2.EDIT_MODE_DIFF:
        parts.append(
            f"Answer with a unified diff of the parent ({DIFF_HEADER[0]} / {DIFF_HEADER[1]}, "
            "hunks with correct line numbers) in one ```diff block."
        )
    else:
        parts.append("Answer with the complete improved module in one ```python block.")
    return "\n\n".join(parts)


def chat_messages(spec: common_pb2.TaskSpec) -> list[dict[str, str]]:
    """The system and user messages of the ``instruct`` template."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _user_message(spec)},
    ]


def render_prompt(spec: common_pb2.TaskSpec, template: str = "plain", tokenizer: Any = None) -> str:
    """The prompt text for ``spec``; ``instruct`` needs the model's tokenizer (chat template)."""
    if template == "plain":
        return _plain(spec)
    if template == "instruct":
        if tokenizer is None:
            raise ValueError("the 'instruct' template needs a tokenizer (for its chat template)")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the 'instruct' template needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(
            chat_messages(spec), tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")


def render_answer(code: str) -> str:
    """The answer a model is trained to write: the code in one ```python block."""
    return "```python\n" + code.strip() + "\n```"


def render_diff(diff: str) -> str:
    """The answer in ``diff`` mode: a unified diff of the parent in one ```diff block."""
    return "```diff\n" + diff.strip("\n") + "\n```"


def extract_diff(text: str) -> str | None:
    """The largest ```diff (or ```patch) block of an answer, or None (nothing repaired)."""
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _DIFF_TAGS]
    return max(blocks, key=len).strip("\n") + "\n" if blocks else None


def extract(text: str) -> tuple[str | None, str]:
    """The code of an answer and how it was found: ``"python"`` (the largest ```python block),
    ``"fenced"`` (no python block: the largest fenced block of any language) or ``"none"``.

    Only closed fences count; nothing is repaired (an answer cut off inside its block has no
    code, and that is what the validity rate must see).
    """
    python: list[str] = []
    other: list[str] = []
    for m in _FENCE.finditer(text):
        (python if m.group(1).lower() in _PYTHON_TAGS else other).append(m.group(2))
    if python:
        return max(python, key=len).strip("\n"), "python"
    if other:
        return max(other, key=len).strip("\n"), "fenced"
    return None, "none"


def extract_code(text: str) -> str | None:
    """The code of an answer (see :func:`extract`), or None."""
    return extract(text)[0]


class PromptTooLongError(ValueError):
    """The prompt alone leaves no room for the answer within ``max_length``."""


class EncodedPair(dict):
    """``input_ids``, ``attention_mask``, ``labels``; ``truncated`` says the answer was cut."""

    truncated: bool = False


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt as generation sees it: the text's ids after one bos (if any).

    A chat template that already writes the bos token is not given a second one.
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return list(ids)


def encode_pair(tokenizer: Any, prompt: str, answer: str, max_length: int) -> EncodedPair:
    """Token ids of prompt + answer + eos with the loss on the answer (and eos) only.

    The two parts are tokenized separately so that the prompt's tokens are exactly those seen
    at generation time. An answer that does not fit is cut from its end and loses its eos
    (``.truncated`` is set); a prompt that leaves no room for any answer token raises
    :class:`PromptTooLongError`.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token")
    p = encode_prompt(tokenizer, prompt)
    if len(p) >= max_length:
        raise PromptTooLongError(
            f"the prompt is {len(p)} tokens; max_length {max_length} leaves no room for the answer"
        )
    a = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    room = max_length - len(p)
    truncated = len(a) > room
    a = a[:room]
    out = EncodedPair(
        input_ids=p + a, attention_mask=[1] * (len(p) + len(a)), labels=[-100] * len(p) + a
    )
    out.truncated = truncated
    return out


def pad_batch(examples: list[dict[str, list[int]]], pad_id: int, device: Any = None) -> dict:
    """Encoded pairs right-padded into tensors: ``input_ids`` with ``pad_id``,
    ``attention_mask`` with 0 and ``labels`` with -100 (no loss on padding)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)

    def pad(key: str, value: int) -> torch.Tensor:
        rows = [e[key] + [value] * (width - len(e[key])) for e in examples]
        return torch.tensor(rows, dtype=torch.long, device=device)

    return {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", -100),
    }
