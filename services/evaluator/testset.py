"""How the test inputs reach the score processes: after training, in a secret order, a chunk
per fresh process.

No candidate process holds the test inputs before it is scored: they live in the trusted
parent's do-not-fork memory (:mod:`services.evaluator.private`). Once the train process has
ended, the parent draws a random order (kept in do-not-fork memory too, so that no later child
inherits it) and scores the inputs ``CHUNK`` at a time, each chunk in a score process of its
own: the process asks (an ``E`` frame), the parent writes that chunk's inputs, in the secret
order, into a mapping shared with that process only and answers on a pipe. The outputs come
back in that order and the parent restores the original one before the evaluator scores them.
A candidate therefore cannot train on the test inputs, cannot map a test position to a label it
learned elsewhere (e.g. from the public dataset's order), and cannot carry anything from one
chunk to the next.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from services.evaluator.frames import write_frame
from services.evaluator.private import private_tensor

CHUNK = 512  # test inputs per score process (2 forward batches of 256)


class SecretOrder:
    """Parent: the test inputs and the order they are scored in."""

    def __init__(self, test_x: torch.Tensor) -> None:
        self.test_x = test_x
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        order = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed))
        self.order = private_tensor(order)
        del order
        self.outputs: np.ndarray | None = None

    def chunks(self) -> list[tuple[int, int]]:
        n = len(self.test_x)
        return [(lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK)]

    def restore(self, outputs: np.ndarray) -> np.ndarray | None:
        """Outputs in the original test order; None when they do not fit."""
        if outputs.shape[0] != len(self.test_x):
            return None
        restored = np.empty_like(outputs)
        restored[self.order.numpy()] = outputs
        return restored


class TestHandover:
    """One chunk's inputs for one score process, through a mapping shared across its fork."""

    __test__ = False  # not a pytest class

    def __init__(self, secret: SecretOrder, lo: int, hi: int) -> None:
        self.secret, self.lo, self.hi = secret, lo, hi
        self.shape = (hi - lo, *secret.test_x.shape[1:])
        self.count = int(np.prod(self.shape))
        self.buf = mmap.mmap(-1, max(self.count * 4, 1))
        self.go_r, self.go_w = os.pipe()
        self.served = False

    def child_side(self) -> None:
        os.close(self.go_w)

    def parent_side(self) -> None:
        os.close(self.go_r)

    def serve(self) -> None:
        """Parent: write the chunk in the secret order and let the child go (once)."""
        if self.served:
            return
        self.served = True
        view = torch.frombuffer(self.buf, dtype=torch.float32, count=self.count)
        idx = self.secret.order[self.lo : self.hi]
        torch.index_select(self.secret.test_x.float(), 0, idx, out=view.view(self.shape))
        del view
        os.write(self.go_w, b"G")

    def receive(self, result_fd: int) -> torch.Tensor:
        """Child: ask for the chunk and wait for it."""
        write_frame(result_fd, b"E", b"")
        if os.read(self.go_r, 1) != b"G":
            raise RuntimeError("the test inputs did not arrive")
        return torch.frombuffer(self.buf, dtype=torch.float32, count=self.count).view(self.shape)

    def close(self) -> None:
        """Parent: release the pipe and the mapping."""
        os.close(self.go_w)
        self.buf.close()
