"""Candidate sources shared by the evaluator tests and benchmarks."""

from __future__ import annotations

import dataclasses

from nasloop.config import EvaluatorConfig
from services.evaluator import protocols
from services.evaluator.datasets import SandboxData
from services.evaluator.task import Protocol

# A small, honest CNN in the candidate contract (LEMUR style: criteria is a tuple).
GOOD_NET = """
import torch
from torch import nn


def supported_hyperparameters():
    return {"lr", "momentum"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, out_shape[0])

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], momentum=prm["momentum"])

    def learn(self, train_data):
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
"""


def with_prefix(prefix: str, net: str = GOOD_NET) -> str:
    """The good network with ``prefix`` run at import time (after its imports)."""
    head, sep, rest = net.partition("\n\ndef supported_hyperparameters")
    return f"{head}\n\n{prefix.strip()}\n{sep}{rest}"


# GOOD_NET's layers, its features and head (from "self.features =" to the head's line): the
# text tests and benchmarks replace to make other networks of the same program.
GOOD_FEATURES = GOOD_NET[
    GOOD_NET.index("self.features =") : GOOD_NET.index("\n", GOOD_NET.index("self.head ="))
]


def replace(old: str, new: str, net: str = GOOD_NET) -> str:
    assert old in net, old
    return net.replace(old, new)


# Issue 18: learn() that first switches the in-process training meter off, reached through
# torch's global forward-hook table (the hook's __self__), then runs ``body``.
METER_OFF = (
    "        import torch.nn.modules.module as _m\n"
    "        for _h in list(_m._global_forward_pre_hooks.values()):\n"
    "            if hasattr(getattr(_h, '__self__', None), 'phase'):\n"
    "                _h.__self__.phase = 'off'\n"
)
LEARN_DEF = "    def learn(self, train_data):\n"


def with_meter_off_learn(body: str, net: str = GOOD_NET) -> str:
    """``net`` whose learn() switches the meter off, then runs ``body`` (its last method)."""
    start = net.index(LEARN_DEF)
    return net[:start] + LEARN_DEF + METER_OFF + body + "\n"


def sandbox_data(train: int, test: int, seed: int) -> SandboxData:
    """Random 3x32x32 inputs, 10 classes: what a sandbox holds, small enough for unit tests."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return SandboxData(
        torch.randn(train, 3, 32, 32, generator=g),
        torch.arange(train) % 10,
        torch.randn(test, 3, 32, 32, generator=g),
        10,
    )


def protocol(**overrides: object) -> Protocol:
    """The default protocol (``lemur-1epoch`` on digits) with ``overrides``."""
    base = protocols.named(EvaluatorConfig())[protocols.DEFAULT]
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
