"""Training batches over a pipe: the trusted parent serves one per request, the train process
asks for each as ``learn()`` iterates.

Child → parent: a ``B`` frame on the result pipe asks for the next batch. Parent → child, on
the data pipe: ``X`` (one batch: ``>4I`` shape, float32 inputs, int64 labels) or ``Z`` (the
epoch is over). The batches come from :func:`services.evaluator.harness.batches`, in the
protocol's order and through its transforms: never a file, never a test input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import torch

from services.evaluator.accounting import Batch, EpochStream
from services.evaluator.datasets import SandboxData
from services.evaluator.frames import frame, read_frame, write_frame
from services.evaluator.task import Task

SHAPE = struct.Struct(">4I")


def encode_batch(x: torch.Tensor, y: torch.Tensor) -> bytes:
    x = x.detach().to(torch.float32).contiguous()
    n, c, h, w = x.shape
    labels = y.to(torch.int64).contiguous().numpy().tobytes()
    return frame(b"X", SHAPE.pack(n, c, h, w) + x.numpy().tobytes() + labels)


def decode_batch(payload: bytes) -> Batch:
    n, c, h, w = SHAPE.unpack_from(payload)
    size = n * c * h * w * 4
    if len(payload) != SHAPE.size + size + n * 8:
        raise ValueError("malformed batch")
    x = torch.frombuffer(bytearray(payload[SHAPE.size : SHAPE.size + size]), dtype=torch.float32)
    y = torch.frombuffer(bytearray(payload[SHAPE.size + size :]), dtype=torch.int64)
    return x.view(n, c, h, w), y


class Server:
    """Parent side: the frames to answer each ``B`` request with, epoch after epoch."""

    def __init__(self, task: Task, data: SandboxData) -> None:
        from services.evaluator.harness import batches

        self._epochs = (batches(data, task, e) for e in range(task.protocol.epochs))
        self._current: Iterator[tuple[torch.Tensor, ...]] | None = None  # (inputs, labels)
        self.served = 0  # batches

    def answer(self) -> bytes:
        """The next batch, or ``Z`` at the end of an epoch (and ever after the last)."""
        if self._current is None:
            self._current = next(self._epochs, None)
            if self._current is None:
                return frame(b"Z", b"")
        batch = next(self._current, None)
        if batch is None:
            self._current = None
            return frame(b"Z", b"")
        self.served += 1
        x, y = batch
        return encode_batch(x, y)


def pipe_stream(task: Task, train_size: int, result_fd: int, data_fd: int) -> EpochStream:
    """Child side: one epoch's stream, each batch asked for when ``learn()`` wants it."""

    def ask() -> Iterator[Batch]:
        while True:
            write_frame(result_fd, b"B", b"")
            got = read_frame(data_fd)
            if got is None or got[0] != b"X":
                return
            x, y = decode_batch(got[1])
            yield x.to(task.protocol.device), y.to(task.protocol.device)

    bs = task.protocol.batch_size
    return EpochStream(ask(), math.ceil(train_size / bs), train_size, bs)
