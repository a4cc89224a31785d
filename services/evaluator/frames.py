"""The one framing used on the sandbox pipes: a 1-byte kind, a 4-byte big-endian length, the
payload. Evaluator ↔ worker (``T``/``C`` in, ``H``/``R`` out) and child → worker (``S`` started,
``P`` progress, ``R`` report; ``B`` a batch request, ``W`` the exported state, ``E`` a request
for test inputs, ``M`` a reference step's mark, ``D`` the network's descriptors:
:mod:`services.evaluator.confine`) all speak it; the worker answers a train process's ``B``
with ``X``/``Z`` frames (``feed``)."""

from __future__ import annotations

import os
import struct

HEADER = 5
MAX_FRAME_BYTES = 64 << 20


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">I", len(payload)) + payload


def payload_length(header: bytes) -> int:
    (n,) = struct.unpack(">I", header[1:HEADER])
    return n


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_frame(fd: int, kind: bytes, payload: bytes) -> None:
    write_all(fd, frame(kind, payload))


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(fd: int) -> tuple[bytes, bytes] | None:
    """One (kind, payload) frame, or None at end of input; an oversized one is a ValueError."""
    head = _read_exact(fd, HEADER)
    if head is None:
        return None
    n = payload_length(head)
    if n > MAX_FRAME_BYTES:
        raise ValueError("oversized frame")
    payload = _read_exact(fd, n) if n else b""
    if payload is None:
        return None
    return head[:1], payload
