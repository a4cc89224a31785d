"""Issue 18: build, train and score in separate confined processes; one epoch checked from
outside the train process; nothing survives from one candidate process to the next.

Real fork, rlimits, seccomp and mount namespaces (no bubblewrap here: the adversarial suite runs
the strict sandbox). Every test below passed the attack before the change.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import struct
from dataclasses import replace as dc_replace

import pytest
import torch
from adversarial import replay
from candidates import GOOD_NET, protocol, replace, sandbox_data, with_meter_off_learn

from nasloop.v1 import common_pb2 as common
from services.evaluator import (
    confine,
    seccomp_filter,
    statefile,
)
from services.evaluator.confine import Limits, run_confined
from services.evaluator.datasets import SandboxData
from services.evaluator.epoch import REFERENCE_STEPS, Ledger
from services.evaluator.private import private_tensor
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=16, seed=3, time_limit_s=60, max_parameters=100_000)
UID = 65534 if os.geteuid() == 0 else None
FORWARD = "        return self.head(torch.flatten(self.features(x), 1))"
STEP = (
    "self.optimizer.zero_grad()\n"
    "            self.criteria[0](self(inputs), labels).backward()\n"
    "            self.optimizer.step()"
)


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return sandbox_data(768, 300, seed=4)


@pytest.fixture(scope="module")
def epoch_data() -> SandboxData:
    """Enough batches (128) that one pass outweighs the check's fixed 0.05 s allowance."""
    return sandbox_data(2048, 20, seed=5)


def task(code: str = GOOD_NET, **proto: object) -> Task:
    return Task("t", code, dc_replace(PROTOCOL, **proto))  # type: ignore[arg-type]


def limits() -> Limits:
    return Limits(
        wall_s=60.0, cpu_s=60.0, memory_bytes=1 << 30, file_bytes=1 << 20, open_files=64,
        uid=UID, gid=UID, seccomp=seccomp_filter.available(), output_tail_bytes=4096,
    )  # fmt: skip


def status(r: object) -> str:
    return common.Status.Name(r.status)  # type: ignore[attr-defined]


ONE_PASS = with_meter_off_learn(f"        for inputs, labels in train_data:\n            {STEP}")
# One pass, then two more over the kept batches: three in all, the meter switched off first.
REPLAY_X3 = with_meter_off_learn(
    "        kept = []\n"
    "        for inputs, labels in train_data:\n"
    "            kept.append((inputs, labels))\n"
    f"            {STEP}\n"
    "        for inputs, labels in kept * 2:\n"
    f"            {STEP}"
)


# --- one epoch, checked from outside ---------------------------------------------------------


def test_one_pass_with_the_meter_switched_off_passes(epoch_data: SandboxData) -> None:
    r = run_confined(task(ONE_PASS), epoch_data, limits())
    assert status(r) == "STATUS_OK", r.message


def test_replaying_three_times_with_the_meter_switched_off_is_refused(
    epoch_data: SandboxData,
) -> None:
    r = run_confined(task(REPLAY_X3), epoch_data, limits())
    assert status(r) == "STATUS_PROTOCOL_VIOLATION", r.message
    assert "training took" in r.message and "CPU time" in r.message


class Recorded(Ledger):
    """The ledger of the last run, for the tests to read."""

    last: Recorded | None = None

    def __init__(self, pid: int, wall: bool = False) -> None:
        super().__init__(pid, wall)
        Recorded.last = self


def test_each_batch_stepped_on_three_times_is_refused_by_the_reference_step(
    epoch_data: SandboxData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three steps on every batch as it arrives: the network's own pace grows with them (the
    pace budget passes it), the reference step, timed in the score process, does not."""
    monkeypatch.setattr(confine, "Ledger", Recorded)
    r = run_confined(task(replay.echo(3)), epoch_data, limits())
    assert status(r) == "STATUS_PROTOCOL_VIOLATION", r.message
    assert "per training step of this architecture" in r.message
    led = Recorded.last
    assert led is not None and led.verdict(0) is None  # the pace budget alone let it through
    assert len(led.marks) == REFERENCE_STEPS + 1


def test_the_reference_step_is_timed_in_the_first_score_process(
    epoch_data: SandboxData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confine, "Ledger", Recorded)
    r = run_confined(task(ONE_PASS), epoch_data, limits())
    assert status(r) == "STATUS_OK", r.message
    led = Recorded.last
    assert led is not None and len(led.marks) == REFERENCE_STEPS + 1
    assert 0 < led.reference_ns() < led.train_ns() / 10
    assert led.reference_use(0) < 1


def test_a_network_that_fails_the_reference_step_is_refused(epoch_data: SandboxData) -> None:
    """The reference step cannot be dodged: a train-mode forward that fails outside learn()
    leaves it untimed, and that is a refusal, not a pass."""
    code = replace(
        FORWARD,
        "        if self.training and not getattr(self, 'learning', False):\n"
        "            raise RuntimeError('not now')\n" + FORWARD,
        replace(
            "    def learn(self, train_data):\n",
            "    def learn(self, train_data):\n        self.learning = True\n",
        ),
    )
    r = run_confined(task(code), epoch_data, limits())
    assert status(r) == "STATUS_PROTOCOL_VIOLATION", r.message
    assert "reference training step was not timed" in r.message
    assert "RuntimeError: not now" in r.output_tail


def test_a_network_with_several_outputs_in_train_mode_gets_its_reference_step(
    data: SandboxData,
) -> None:
    """An auxiliary output in train mode (logits and features, which its own learn() unpacks):
    the reference step's loss takes what fits, and the honest network passes."""
    code = replace(
        FORWARD,
        "        h = torch.flatten(self.features(x), 1)\n"
        "        return (self.head(h), h) if self.training else self.head(h)",
        replace(
            "self.criteria[0](self(inputs), labels)", "self.criteria[0](self(inputs)[0], labels)"
        ),
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_OK", (r.message, r.output_tail)


def test_forged_marks_and_a_closed_pipe_in_the_score_process_only_refuse_it(
    data: SandboxData,
) -> None:
    """train_setup() in the score process (after its outputs left) closes every pipe end it
    reads from, the acknowledgements' included, and sends marks of its own: the parent's
    acknowledgements then meet a closed pipe; the candidate is refused, the parent is fine."""
    code = replace(
        FORWARD,
        "        if not self.training and len(x) > 4:  # not the probe\n"
        "            self.scored = True\n" + FORWARD,
        replace(
            "    def train_setup(self, prm):\n",
            "    def train_setup(self, prm):\n"
            "        if getattr(self, 'scored', False):\n"
            "            _os = torch.serialization.os\n"
            "            for fd in range(3, 64):\n"
            "                try:\n"
            "                    _os.write(fd, b'')\n"
            "                except OSError:\n"
            "                    try:\n"
            "                        _os.close(fd)\n"
            "                    except OSError:\n"
            "                        pass\n"
            "            for fd in range(3, 64):\n"
            "                try:\n"
            "                    _os.write(fd, b'M\\0\\0\\0\\0' * 8)\n"
            "                except OSError:\n"
            "                    pass\n",
        ),
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_PROTOCOL_VIOLATION", r.message


def ledger(gaps_ms: list[float], tail_ms: float, reference_ms: float = 0.0) -> Ledger:
    """A ledger of requests ``gaps_ms`` apart, the state ``tail_ms`` after the last, and
    reference steps of ``reference_ms``."""
    led = Ledger(pid=0)
    t = 0
    for g in [0.0, *gaps_ms]:
        t += int(g * 1e6)
        led.requests.append(t)
    led.batches = len(gaps_ms)
    led.end = t + int(tail_ms * 1e6)
    step = int(reference_ms * 1e6)
    led.marks = [0, 5 * step, 6 * step, 7 * step][: REFERENCE_STEPS + 1] if step else []
    return led


def test_the_ledger_refuses_time_one_reference_step_per_batch_does_not_explain() -> None:
    steady = [10.0] * 100
    assert ledger(steady, 5, reference_ms=10).reference_verdict(0) is None
    assert ledger(steady, 5, reference_ms=4.5).reference_verdict(0) is None  # 10 <= 2 x 4.5 + 1
    assert ledger(steady, 5, reference_ms=4.3).reference_verdict(0) is not None
    assert ledger(steady, 5).reference_verdict(0) is not None  # no reference step timed
    short = ledger(steady, 5, reference_ms=10)
    short.marks = short.marks[:REFERENCE_STEPS]  # one mark missing
    assert "not timed" in (short.reference_verdict(0) or "")


def test_the_ledger_refuses_time_its_pace_does_not_explain() -> None:
    steady = [10.0] * 100
    assert ledger(steady, 20).verdict(0) is None
    assert ledger([300.0, *steady[1:]], 20).verdict(0) is None  # a slow first batch
    assert ledger(steady, 2100).verdict(0) is not None  # two more passes after the stream
    growing = [10.0 * (i + 1) for i in range(100)]  # all kept batches again at each new one
    assert ledger(growing, 20).verdict(0) is not None


# --- only the exported state reaches the score -----------------------------------------------


def test_plain_attributes_do_not_reach_the_score(data: SandboxData) -> None:
    code = replace(
        FORWARD,
        "        if not self.training and getattr(self, 'trained_flag', False):\n"
        "            print('FLAG-REACHED-THE-SCORE')\n" + FORWARD,
    )
    code = replace("            self.optimizer.step()\n", "            self.optimizer.step()\n"
                   "        self.trained_flag = True\n", code)  # fmt: skip
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_OK", r.message
    assert "FLAG-REACHED-THE-SCORE" not in r.output_tail


def test_the_parameter_limit_is_counted_on_the_export(data: SandboxData) -> None:
    code = replace(
        FORWARD,
        FORWARD + "\n\n    def state_dict(self, *a, **k):\n"
        "        sd = super().state_dict(*a, **k)\n"
        "        sd['bank'] = torch.zeros(200_000)\n"
        "        return sd\n\n"
        "    def load_state_dict(self, sd, strict=True):\n"
        "        sd = dict(sd)\n"
        "        self.bank = sd.pop('bank')\n"
        "        return super().load_state_dict(sd, strict)",
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_PARAMETER_LIMIT", r.message
    assert "more than 100,000 elements exported" in r.message


def test_each_chunk_of_test_inputs_is_scored_by_a_fresh_process() -> None:
    code = replace(
        FORWARD,
        "        if not self.training and x.shape[0] > 4:\n"
        "            global _CALLS\n"
        "            _CALLS = globals().get('_CALLS', 0) + 1\n"
        "            print('SCORED', _CALLS, x.shape[0])\n" + FORWARD,
    )
    r = run_confined(task(code), sandbox_data(64, 600, seed=6), limits())
    assert status(r) == "STATUS_OK", r.message
    seen = [ln for ln in r.output_tail.splitlines() if ln.startswith("SCORED")]
    # 512 inputs in two forward calls, then the other 88 in a process that counts from 1 again.
    assert sorted(seen) == ["SCORED 1 256", "SCORED 1 88", "SCORED 2 256"], r.output_tail


# --- no data in the build phase, nothing left behind -----------------------------------------


def test_the_build_phase_holds_no_data() -> None:
    data = sandbox_data(64, 300, seed=7)
    data.train_x[0, 0, 0, 0], data.test_x[0, 0, 0, 0] = 12345.5, 23456.5  # markers to look for
    # What an attacker would do: every tensor gc knows whose memory is mapped here, searched.
    code = replace(
        "        self.device = device\n",
        "        self.device = device\n"
        "        import gc\n"
        "        spans = [[int(v, 16) for v in ln.split()[0].split('-')]\n"
        "                 for ln in open('/proc/self/maps')]\n"
        "        mapped = lambda t: any(a <= t.data_ptr() < b for a, b in spans)\n"
        "        found = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)\n"
        "                 and o.dim() == 4 and o.numel() and mapped(o)\n"
        "                 and float(o[0, 0, 0, 0]) in (12345.5, 23456.5)]\n"
        "        print('DATA-IN-BUILD', len(found))\n",
    )
    r = run_confined(task(code), data, limits())
    assert status(r) == "STATUS_OK", r.message
    assert "DATA-IN-BUILD 0" in r.output_tail, r.output_tail


def test_a_forked_child_cannot_read_the_private_data() -> None:
    """The trusted side's copies (found through gc, say) are not mapped in a child: a read
    faults instead of returning data."""
    held = private_tensor(torch.arange(1000.0))
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()  # the fault is expected: no traceback dump from this child
        try:
            os._exit(int(held.sum().item() == 499500.0))
        finally:
            os._exit(2)
    _, code = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGSEGV
    assert held.sum().item() == 499500.0  # here, it is


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_what_training_writes_is_gone_when_scoring(data: SandboxData, where: str) -> None:
    path = f"{where}/nasloop-carry-{os.getpid()}"
    code = replace(
        "            self.optimizer.step()\n",
        "            self.optimizer.step()\n"
        "        try:\n"
        f"            open({path!r}, 'w').write('kept')\n"
        "            print('WROTE')\n"
        "        except OSError as e:\n"
        "            print('REFUSED', e)\n",
    )
    code = replace(
        FORWARD,
        "        if not self.training and x.shape[0] > 4:\n"
        "            import os as _o\n"
        f"            print('CARRIED' if _o.path.exists({path!r}) else 'GONE')\n" + FORWARD,
        code,
    )
    try:
        r = run_confined(task(code), data, limits())
    finally:
        assert not os.path.exists(path), "the candidate wrote outside its own mount"
    assert status(r) == "STATUS_OK", r.message
    assert "CARRIED" not in r.output_tail and "GONE" in r.output_tail, r.output_tail


# --- the exported state's format -------------------------------------------------------------


def test_a_state_is_read_strictly() -> None:
    good = statefile.encode([statefile.Entry("w", "F32", (2, 3), bytes(24))])
    assert [e.name for e in statefile.parse(good, 6)] == ["w"]
    with pytest.raises(statefile.StateError, match="elements"):
        statefile.parse(good, 5)
    with pytest.raises(statefile.StateError, match="trailing"):
        statefile.parse(good + b"x", 6)
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' \
             b'"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'  # fmt: skip
    with pytest.raises(statefile.StateError, match="overlap"):
        statefile.parse(struct.pack("<Q", len(header)) + header + bytes(8), 10)
    with pytest.raises(statefile.StateError):
        statefile.parse(struct.pack("<Q", 10**9) + b"{}", 10)
