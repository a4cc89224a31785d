"""How the test inputs reach a candidate: after its training, in a secret order.

The confined child drops the copy of the test inputs it inherited before any candidate code
runs. When its training is over the harness asks for them (an ``E`` frame); the trusted parent
then draws a random order — after the fork, so that it never existed in the child's memory —
writes the inputs in that order into a shared anonymous mapping and answers on a pipe. The
child's outputs come back in that order and the parent restores the original one before the
evaluator scores them. A candidate therefore cannot train on the test inputs, and cannot map a
test position to a label it learned elsewhere (e.g. from the public dataset's order).
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from services.evaluator.datasets import SandboxData
from services.evaluator.frames import write_frame
from services.evaluator.task import Task


class TestHandover:
    __test__ = False  # not a pytest class

    def __init__(self, test_x: torch.Tensor) -> None:
        self.test_x: torch.Tensor | None = test_x.to(torch.float32).contiguous()
        self.shape = tuple(test_x.shape)
        self.count = int(test_x.numel())
        self.buf = mmap.mmap(-1, max(self.count * 4, 1))  # shared with the child across fork
        self.go_r, self.go_w = os.pipe()
        self.order: torch.Tensor | None = None
        self.served = False

    @classmethod
    def prepare(cls, task: Task, data: SandboxData) -> TestHandover:
        n = task.protocol.test_subset or len(data.test_x)
        return cls(data.test_x[:n])

    def child_side(self) -> None:
        os.close(self.go_w)
        self.test_x = None

    def parent_side(self) -> None:
        os.close(self.go_r)
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        self.order = torch.randperm(self.shape[0], generator=torch.Generator().manual_seed(seed))

    def serve(self) -> None:
        """Parent: write the inputs in the secret order and let the child go (once)."""
        if self.served or self.order is None or self.test_x is None:
            return
        self.served = True
        view = torch.frombuffer(self.buf, dtype=torch.float32, count=self.count)
        torch.index_select(self.test_x, 0, self.order, out=view.view(self.shape))
        del view
        os.write(self.go_w, b"G")

    def receive(self, result_fd: int) -> torch.Tensor:
        """Child: ask for the test inputs and wait for them."""
        write_frame(result_fd, b"E", b"")
        if os.read(self.go_r, 1) != b"G":
            raise RuntimeError("the test inputs did not arrive")
        return torch.frombuffer(self.buf, dtype=torch.float32, count=self.count).view(self.shape)

    def restore_order(self, outputs: np.ndarray) -> np.ndarray | None:
        """Parent: outputs in the original test order; None when they do not fit."""
        if self.order is None or outputs.shape[0] != self.shape[0]:
            return None
        restored = np.empty_like(outputs)
        restored[self.order.numpy()] = outputs
        return restored

    def close(self) -> None:
        """Parent: release the pipe and the mapping."""
        os.close(self.go_w)
        self.buf.close()
