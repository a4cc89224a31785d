"""Data the trusted side holds where no forked child can see it.

Every candidate process is forked from a warm process (a sandbox worker, or the pod's runner)
that holds the dataset. Its tensors are kept in anonymous mappings marked ``MADV_DONTFORK``:
a forked child simply does not have those pages (touching them would fault), so the build
phase starts with no training or test data in its memory, and the train and score phases get
only what the parent hands them. Freed heap memory could still hold copies (a batch the worker
streamed, the loader's buffers): :func:`scrub_freed_memory` makes glibc overwrite every block
it frees (``M_PERTURB``), so a child inherits no such remnants either.
"""

from __future__ import annotations

import ctypes
import mmap

import torch

from services.evaluator.datasets import SandboxData

M_PERTURB = -6
SCRUB_BYTE = 0x5A


def private_tensor(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in a mapping that forked children do not inherit."""
    t = t.detach().cpu().contiguous()
    nbytes = t.numel() * t.element_size()
    mm = mmap.mmap(-1, max(nbytes, 1))
    mm.madvise(mmap.MADV_DONTFORK)
    out = torch.frombuffer(mm, dtype=t.dtype, count=t.numel()).view(t.shape)
    out.copy_(t)
    out._nasloop_private = mm  # type: ignore[attr-defined]  # keeps the mapping alive
    return out


def is_private(t: torch.Tensor | None) -> bool:
    return t is None or hasattr(t, "_nasloop_private")


def private_data(data: SandboxData) -> SandboxData:
    """``data`` with every tensor in a do-not-fork mapping (itself when it already is)."""
    tensors = (data.train_x, data.train_y, data.test_x)
    if all(is_private(t) for t in tensors):
        return data
    train_x, train_y, test_x = [None if t is None else private_tensor(t) for t in tensors]
    return SandboxData(train_x, train_y, test_x, data.num_classes)


def scrub_freed_memory() -> None:
    """glibc overwrites each block it frees from now on (and fills new ones): no freed copy of
    a batch or of the loaded file survives in the heap a child inherits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mallopt(M_PERTURB, SCRUB_BYTE) != 1:
        raise OSError("mallopt(M_PERTURB) failed")
