"""Replays of the training data in several disguises (issue 18, item 2), on the good network
(tests/candidates.py) whose ``learn()`` first switches the in-process meter off through torch's
global hook table: only the trusted side's epoch check (services/evaluator/epoch.py) is left.

Shared by tests/adversarial/test_replay.py and benchmarks/epoch_check.py.
"""

from __future__ import annotations

import textwrap

from candidates import GOOD_NET, replace, with_meter_off_learn

# LEMUR's training step on (inputs, labels), as the good network writes it.
STEP = """\
inputs, labels = inputs.to(self.device), labels.to(self.device)
self.optimizer.zero_grad()
loss = self.criteria[0](self(inputs), labels)
loss.backward()
nn.utils.clip_grad_norm_(self.parameters(), 3)
self.optimizer.step()
"""


def _body(code: str) -> str:
    """learn()'s body: ``code`` indented under the method (8 spaces)."""
    return textwrap.indent(textwrap.dedent(code), " " * 8).rstrip("\n")


def _step(indent: int) -> str:
    return textwrap.indent(STEP, " " * indent)


def one_pass() -> str:
    """The honest loop, with the meter switched off (the control)."""
    return with_meter_off_learn(_body("for inputs, labels in train_data:\n" + _step(4)))


def _echo_body(steps: int, per: int = 1) -> str:
    return _body(
        "for i, (inputs, labels) in enumerate(train_data):\n"
        f"    for _ in range({steps} * (i + 1) // {per} - {steps} * i // {per}):\n" + _step(8)
    )


def echo(steps: int, per: int = 1) -> str:
    """Each batch stepped on as it arrives, ``steps`` times per ``per`` batches (``steps / per``
    passes), the extra steps spread evenly over the epoch."""
    return with_meter_off_learn(_echo_body(steps, per))


def interleaved(extra: int) -> str:
    """Each new batch, then the ``extra`` batches before it again: ``extra + 1`` passes (all
    but the first batches), spread evenly over the epoch."""
    return with_meter_off_learn(
        _body(
            "kept = []\n"
            "for batch in train_data:\n"
            "    kept.append(batch)\n"
            f"    for inputs, labels in [kept[-1]] + kept[-1 - {extra}:-1]:\n" + _step(8)
        )
    )


def replay_at_end(extra: float) -> str:
    """One pass, then ``extra`` more over the kept batches (a fraction: that share of them)."""
    return with_meter_off_learn(
        _body(
            "kept = []\n"
            "for inputs, labels in train_data:\n"
            "    kept.append((inputs, labels))\n"
            + _step(4)
            + f"for i in range(int(len(kept) * {extra})):\n"
            "    inputs, labels = kept[i % len(kept)]\n" + _step(4)
        )
    )


FORWARD = "    def forward(self, x):\n"


def replay_in_forward(times: int) -> str:
    """The replay hidden in ``forward()``: learn() hands it each batch's labels, and every
    train-mode forward with a batch of its own steps the network ``times - 1`` more times on
    it first (wherever the labels are at hand)."""
    hidden = (
        FORWARD + "        y = getattr(self, '_labels', None)\n"
        "        if self.training and y is not None and len(y) == len(x) and not self._inner:\n"
        "            self._inner = True\n"
        f"            for _ in range({times - 1}):\n"
        "                self.optimizer.zero_grad()\n"
        "                self.criteria[0](self(x.detach()), y).backward()\n"
        "                self.optimizer.step()\n"
        "            self.optimizer.zero_grad()\n"
        "            self._inner = False\n"
    )
    learn = _body(
        "self._inner = False\n"
        "for inputs, labels in train_data:\n"
        "    self._labels = labels\n" + _step(4) + "self._labels = None\n"
    )
    return with_meter_off_learn(learn, replace(FORWARD, hidden, GOOD_NET))


def burn_outside_learn(times: int, burn: int) -> str:
    """The attack the reference step invites: ``forward()`` in train mode outside ``learn()``
    (where the trusted side times one training step) first runs ``burn`` extra forward and
    backward passes, discarded; ``learn()`` steps on each batch ``times`` times."""
    slow = (
        FORWARD + "        if self.training and not getattr(self, '_learning', False):\n"
        f"            for _ in range({burn}):\n"
        "                self.head(torch.flatten(self.features(x.detach()), 1)).sum().backward()\n"
    )
    learn = f"        self._learning = True\n{_echo_body(times)}\n        self._learning = False"
    return with_meter_off_learn(learn, replace(FORWARD, slow, GOOD_NET))


def slow_eval_forward(times: int, burn: int) -> str:
    """Each batch stepped on ``times`` times, and an eval-mode ``forward()`` (the score
    phase's) made ``burn + 1`` times as slow: a reference taken from the scoring pass would
    grow with it; the reference step is taken in train mode."""
    slow = (
        FORWARD + "        if not self.training:\n"
        f"            for _ in range({burn}):\n"
        "                self.head(torch.flatten(self.features(x), 1))\n"
    )
    return with_meter_off_learn(_echo_body(times), replace(FORWARD, slow, GOOD_NET))
