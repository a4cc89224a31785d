"""Generator parts without an engine: the event-loop bridge, sampling, code extraction."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from nasloop.prompts import extract
from services.generator.aio import LoopThread
from services.generator.backend import Sampling
from services.generator.hf_backend import _sample


@pytest.fixture
def loop():  # type: ignore[no-untyped-def]
    lt = LoopThread()
    yield lt
    lt.close()


def test_stream_yields_raises_and_cancel_runs_cleanup(loop: LoopThread) -> None:
    async def numbers(fail: bool):  # type: ignore[no-untyped-def]
        for i in range(3):
            yield i
        if fail:
            raise ValueError("boom")

    items, _ = loop.stream(numbers(False))
    assert list(items) == [0, 1, 2]
    items, _ = loop.stream(numbers(True))
    with pytest.raises(ValueError, match="boom"):
        list(items)

    cleaned = threading.Event()

    async def endless():  # type: ignore[no-untyped-def]
        try:
            while True:
                yield 1
                await asyncio.sleep(0.01)
        finally:
            cleaned.set()

    items, cancel = loop.stream(endless())
    assert next(items) == 1
    cancel()  # as a cancelled RPC does, from another thread
    assert cleaned.wait(5)
    assert set(items) <= {1}  # the iterator ends
    assert loop.run(asyncio.sleep(0, "still running")) == "still running"


def test_sampling_is_seeded_and_filters() -> None:
    logits = torch.tensor([5.0, 4.0, 1.0, 0.5, -2.0])

    def draws(s: Sampling, count: int = 200) -> set[int]:
        g = torch.Generator().manual_seed(s.seed)
        return {_sample(logits, s, g) for _ in range(count)}

    assert draws(Sampling(0.0, 1.0, 0, 8, 1)) == {0}  # greedy
    assert draws(Sampling(1.0, 1.0, 2, 8, 1)) == {0, 1}  # top-k 2
    assert draws(Sampling(1.0, 0.5, 0, 8, 1)) == {0}  # top-p: the first token already has > 0.5
    assert len(draws(Sampling(2.0, 1.0, 0, 8, 1))) >= 4
    a = [_sample(logits, Sampling(1.5, 1.0, 0, 8, 9), torch.Generator().manual_seed(9))
         for _ in range(5)]  # fmt: skip
    b = [_sample(logits, Sampling(1.5, 1.0, 0, 8, 9), torch.Generator().manual_seed(9))
         for _ in range(5)]  # fmt: skip
    assert a == b


def test_extraction_prefers_the_largest_python_block() -> None:
    text = "```python\nx = 1\n```\n```python\nimport torch\ny = 2\n```\n```\nplain = 3\n```"
    assert extract(text) == ("import torch\ny = 2", "python")
    assert extract("```sh\nls -la\n```") == ("ls -la", "fenced")
    assert extract("```python\nunclosed = 1\n") == (None, "none")
