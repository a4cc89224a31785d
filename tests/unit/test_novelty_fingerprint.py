"""Canonical token stream, shingles and MinHash fingerprints of the novelty service."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from nasloop.fingerprint import (
    KEPT_NAMES,
    MINHASH_SCHEME,
    MINHASH_SEED,
    TokenMode,
    jaccard,
    minhash,
    shingle_hash,
    shingles,
    tokens,
)

ROOT = Path(__file__).resolve().parents[2]

BASE = """
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.conv1 = nn.Conv2d(in_shape[1], 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64 * 8 * 8, out_shape[0])

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            self.optimizer.step()

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = x.view(x.size(0), -1)
        return self.fc(x)
"""

# Every local, attribute and loop variable renamed; numbers and strings changed.
RENAMED = """
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'learning_rate', 'mom'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.c_a = nn.Conv2d(in_shape[1], 48, kernel_size=5, padding=2)
        self.norm_a = nn.BatchNorm2d(48)
        self.c_b = nn.Conv2d(48, 96, kernel_size=5, padding=2)
        self.norm_b = nn.BatchNorm2d(96)
        self.downsample = nn.MaxPool2d(2)
        self.classifier = nn.Linear(96 * 8 * 8, out_shape[0])

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])

    def learn(self, train_data):
        self.train()
        for xb, yb in train_data:
            xb, yb = xb.to(self.device), yb.to(self.device)
            self.optimizer.zero_grad()
            err = self.criteria[0](self(xb), yb)
            err.backward()
            self.optimizer.step()

    def forward(self, inp):
        inp = self.downsample(torch.relu(self.norm_a(self.c_a(inp))))
        inp = self.downsample(torch.relu(self.norm_b(self.c_b(inp))))
        inp = inp.view(inp.size(0), -1)
        return self.classifier(inp)
"""

# Same code: two-space indents, line breaks inside brackets, spacing, blank lines, a
# backslash continuation, comments and docstrings everywhere.
REFORMATTED = '''
"""A module docstring.

Spanning lines."""
import torch  # the framework
import torch.nn as nn


# hyperparameters
def supported_hyperparameters():
  """Which hyperparameters."""
  return {
      'lr',
      'momentum',
  }
class Net(nn.Module):
  """The network."""

  def __init__(self, in_shape, out_shape, prm, device):
    \'\'\'Build the layers.\'\'\'
    super().__init__()

    self.device = device
    self.conv1 = nn.Conv2d(
        in_shape[1],
        32,
        kernel_size = 3,
        padding = 1,
    )  # first conv
    self.bn1 = nn.BatchNorm2d( 32 )
    self.conv2 = nn.Conv2d(32, 64, kernel_size=3,
                           padding=1)
    self.bn2 = nn.BatchNorm2d(64)
    self.pool = nn.MaxPool2d(2)
    self.fc = nn.Linear(64 * 8 * 8,
                        out_shape[0]
                        )

  def train_setup(self, prm):
    self.to(self.device)
    self.criteria = (nn.CrossEntropyLoss().to(self.device),)
    self.optimizer = torch.optim.SGD(
        self.parameters(), lr=prm['lr'], momentum=prm['momentum']
    )

  def learn(self, train_data):
    """One epoch."""
    self.train()
    for inputs, labels in train_data:
      # move to the device
      inputs, labels = inputs.to(self.device), \\
          labels.to(self.device)
      self.optimizer.zero_grad()
      loss = self.criteria[0](self(inputs), labels)
      loss.backward()
      self.optimizer.step()

  def forward(self, x):
    "Forward pass."
    x = self.pool(torch.relu(self.bn1(self.conv1(x))))
    x = self.pool(torch.relu(self.bn2(self.conv2(x))))
    x = x.view(x.size(0), -1)   # flatten
    return self.fc(x)
'''

# A different architecture under the same contract: residual blocks, GELU, global pooling.
DIFFERENT = """
import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.na = nn.GroupNorm(8, c)
        self.nb = nn.GroupNorm(8, c)

    def forward(self, x):
        y = F.gelu(self.na(self.a(x)))
        return F.gelu(x + self.nb(self.b(y)))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.stem = nn.Sequential(nn.Conv2d(in_shape[1], 64, 7, stride=2, padding=3), nn.GELU())
        self.stages = nn.ModuleList([Block(64) for _ in range(4)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(64, out_shape[0]))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss(label_smoothing=0.1).to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'],
                                         nesterov=True, weight_decay=5e-4)

    def learn(self, train_data):
        self.train()
        for step, (x, y) in enumerate(train_data):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self.forward(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3.0)
            self.optimizer.step()

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)
"""


def sim(a: str, b: str, mode: TokenMode = TokenMode.CANONICAL) -> float:
    return jaccard(minhash(a, mode), minhash(b, mode))


def test_renaming_variables_does_not_change_the_canonical_stream() -> None:
    assert tokens(RENAMED) == tokens(BASE)
    assert sim(BASE, RENAMED) == 1.0


def test_reformatting_comments_and_docstrings_do_not_change_the_canonical_stream() -> None:
    assert tokens(REFORMATTED) == tokens(BASE)
    assert sim(BASE, REFORMATTED) == 1.0


def test_canonical_stream_normalises_names_numbers_strings_and_keeps_torch_names() -> None:
    toks = tokens("self.conv1 = nn.Conv2d(in_shape[1], 32, kernel_size=3)  # c\nx='a' + F.relu(y)")
    assert toks == [
        "self", ".", "ID", "=", "nn", ".", "Conv2d", "(", "in_shape", "[", "NUM", "]", ",",
        "NUM", ",", "kernel_size", "=", "NUM", ")", "ID", "=", "STR", "+", "F", ".", "relu",
        "(", "ID", ")",
    ]  # fmt: skip
    assert {"Conv2d", "relu", "SGD", "kaiming_normal_", "CosineAnnealingLR"} <= KEPT_NAMES
    assert {"def", "return", "range", "self", "forward", "train_setup"} <= KEPT_NAMES


def test_self_attributes_named_like_torch_functions_are_normalised() -> None:
    assert tokens("self.relu = nn.ReLU()\nx = self.relu(x)") == tokens(
        "self.act = nn.ReLU()\nx = self.act(x)"
    )
    # ... but contract attributes and nn.Module methods are kept
    assert tokens("self.optimizer.step(); self.to(self.device)") == [
        "self", ".", "optimizer", ".", "step", "(", ")", "self", ".", "to", "(", "self", ".",
        "device", ")",
    ]  # fmt: skip


def test_only_bare_string_statements_are_dropped() -> None:
    # A string alone on a line inside brackets is an argument, not a docstring.
    assert tokens("f(\n    'a'\n)") == tokens("f('a')") == ["ID", "(", "STR", ")"]
    assert tokens("x = 1; 'doc'\n'doc'; y = 2") == tokens("x = 1\ny = 2")
    assert tokens("'a' 'b'\nx = 'a' 'b'") == ["ID", "=", "STR", "STR"]
    strings = ["ID", "=", "STR", "+", "STR", "+", "STR"]
    assert tokens("x = rb'\\x00' + f\"{y}\" + '''z'''") == strings


def test_operators_and_numbers() -> None:
    assert tokens("a **= b // c -> d ... e := f != 0x1F + 1_000.5e-3j + .5") == [
        "ID", "**=", "ID", "//", "ID", "->", "ID", "...", "ID", ":=", "ID", "!=", "NUM", "+",
        "NUM", "+", "NUM",
    ]  # fmt: skip


def test_a_different_architecture_is_novel() -> None:
    assert sim(BASE, DIFFERENT) < 0.85
    assert sim(RENAMED, DIFFERENT) < 0.85


def test_raw_mode_is_sensitive_to_renames_and_layout() -> None:
    assert tokens(BASE, TokenMode.RAW) == BASE.split()
    assert sim(BASE, RENAMED, TokenMode.RAW) < 0.85
    assert sim(BASE, REFORMATTED, TokenMode.RAW) < 0.85
    assert sim(BASE, BASE, TokenMode.RAW) == 1.0


def test_mode_may_be_given_as_its_value() -> None:
    assert np.array_equal(minhash(BASE, "raw"), minhash(BASE, TokenMode.RAW))  # type: ignore[arg-type]


GARBAGE = [
    "",
    "   \n\t\n",
    "def f(:\n  )))(((",
    '"""never closed',
    "'never closed\nx = 1",
    "x = 'a\\",
    "\\",
    "π = 3\n变量 = π + ²",
    "\x00\x01\x02 \udcff \ufeff",
    "\v\f\u00a0\u2028",
    "@@@ $$$ ??? ``` !!!",
    "if x:\n\treturn\n  else",
    "0x 0b2 1e 1.2.3 ..5",
    "#",
    "r'''\\",
    ")]}",
]


@pytest.mark.parametrize("code", GARBAGE)
def test_garbage_never_raises_except_for_no_tokens(code: str) -> None:
    for mode in TokenMode:
        toks = tokens(code, mode)
        assert all(t and not any(c.isspace() for c in t) for t in toks)
        if toks:
            assert minhash(code, mode).shape == (128,)
        else:
            with pytest.raises(ValueError, match="no tokens"):
                minhash(code, mode)


def test_random_mutations_never_raise() -> None:
    rng = random.Random(7)
    alphabet = "'\"#\\()[]{}\n\t ;:.xy1é\x00"
    for _ in range(300):
        chars = list(rng.choice((BASE, DIFFERENT, REFORMATTED)))
        for _ in range(rng.randrange(1, 40)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        cut = rng.randrange(len(chars))
        code = "".join(chars[cut : cut + rng.randrange(1, 3000)])
        assert isinstance(tokens(code), list)
        try:
            minhash(code)
        except ValueError as exc:
            assert "no tokens" in str(exc)


@pytest.mark.parametrize(
    "code",
    [
        "'''" * 20_000,
        "'" * 60_000,
        "\\" * 60_000,
        " " * 200_000 + "\v",
        "(" * 60_000,
        ", " + "# " * 5_000 + "x",
        ", \n" * 20_000,
    ],
)
def test_lexer_is_linear_on_adversarial_input(code: str) -> None:
    start = time.perf_counter()
    tokens(code)
    assert time.perf_counter() - start < 2.0


def test_no_tokens_raise_a_clear_value_error() -> None:
    for code in ("", "   ", "# only a comment\n", '"""only a docstring"""\n'):
        with pytest.raises(ValueError, match="no tokens"):
            minhash(code)


def test_shingles() -> None:
    toks = ["a", "b", "c", "d"]
    assert shingles(toks, 2) == [b"a b", b"b c", b"c d"]
    assert shingles(toks, 4) == [b"a b c d"]
    assert shingles(toks, 7) == [b"a b c d"]
    assert shingles([], 7) == []
    with pytest.raises(ValueError):
        shingles(toks, 0)


@pytest.mark.parametrize("mode", list(TokenMode))
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("code", [BASE, DIFFERENT, "x = 1", "π"])
def test_fast_minhash_equals_datasketch_minhash(mode: TokenMode, k: int, code: str) -> None:
    reference = MinHash(
        num_perm=64, seed=MINHASH_SEED, scheme=MINHASH_SCHEME, hashfunc=shingle_hash
    )
    reference.update_batch(shingles(tokens(code, mode), k))
    fast = minhash(code, mode, shingle_size=k, num_perm=64)
    assert fast.dtype == np.uint64 and fast.shape == (64,)
    assert np.array_equal(fast, reference.hashvalues)


def test_fingerprints_are_deterministic_across_processes() -> None:
    script = (
        "import sys; from nasloop.fingerprint import minhash, TokenMode\n"
        "code = sys.stdin.read()\n"
        "print(minhash(code).tobytes().hex(), minhash(code, TokenMode.RAW).tobytes().hex())\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=DIFFERENT,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)},
    ).stdout.split()
    here = [minhash(DIFFERENT).tobytes().hex(), minhash(DIFFERENT, TokenMode.RAW).tobytes().hex()]
    assert out[:2] == here
    assert out[2] == "False"  # the torch vocabulary comes from torch_names.txt, not torch


def test_the_lexer_cannot_backtrack_into_a_different_match() -> None:
    """Without possessive quantifiers (CPython 3.11.2 matched them wrongly), a comment still
    runs to the end of its line, so a comma before it is no trailing comma; and a name directly
    followed by a quote is either a string prefix or a name of its own, never cut short."""
    assert tokens("f(a, # )\n b)") == ["ID", "(", "ID", ",", "ID", ")"]
    assert tokens("f(a, # x\n)") == ["ID", "(", "ID", ")"]
    assert tokens('x = rb"ab" + foo"q"') == ["ID", "=", "STR", "+", "ID", "STR"]
