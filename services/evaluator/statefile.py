"""A trained network's state as safetensors bytes, written by the train process and parsed here.

The format is safetensors' own (8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, the raw little-endian bytes), written and read without the
``safetensors`` package, which the sandbox's view does not hold. :func:`parse` is the trusted
side's reader: strict about every field, no pickle, bounded by the protocol's parameter limit,
and :func:`encode` of what it returns is the canonical form the score processes receive (no
metadata, no padding, no byte the train process chose beyond names, dtypes, shapes and values).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

import numpy as np

# safetensors dtype names ↔ numpy; bfloat16 has no numpy type and travels as raw 16-bit words.
DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<i2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip
MAX_TENSORS = 100_000
MAX_NAME = 512
MAX_HEADER_BYTES = 64 << 20
NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class StateError(ValueError):
    """The bytes are not a well-formed state within the limits."""


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # a key of DTYPES
    shape: tuple[int, ...]
    data: bytes

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def encode(entries: list[Entry]) -> bytes:
    header: dict[str, object] = {}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape),
                          "data_offsets": [offset, offset + len(e.data)]}  # fmt: skip
        offset += len(e.data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(e.data for e in entries)


def parse(data: bytes | memoryview, max_elements: int) -> list[Entry]:
    """The entries of a safetensors blob; :class:`StateError` for anything malformed or for more
    than ``max_elements`` tensor elements in all (every entry counts: parameters and buffers)."""
    view = memoryview(data)
    if len(view) < 8:
        raise StateError("the exported state is truncated")
    (hlen,) = struct.unpack("<Q", view[:8])
    if hlen > min(MAX_HEADER_BYTES, len(view) - 8):
        raise StateError("the exported state has a bad header length")
    try:
        header = json.loads(bytes(view[8 : 8 + hlen]))
    except (ValueError, RecursionError) as e:
        raise StateError(f"the exported state's header is not JSON: {type(e).__name__}") from None
    if not isinstance(header, dict) or len(header) > MAX_TENSORS:
        raise StateError("the exported state's header is not a table of tensors")
    header.pop("__metadata__", None)  # allowed by the format, dropped: it carries no tensor
    body = view[8 + hlen :]
    entries: list[Entry] = []
    total = end_of_last = 0
    spans = []
    for name, spec in header.items():
        if not (isinstance(name, str) and len(name) <= MAX_NAME and NAME.fullmatch(name)):
            raise StateError(f"bad tensor name {str(name)[:60]!r}")
        if not (isinstance(spec, dict) and spec.get("dtype") in DTYPES):
            raise StateError(f"{name}: bad dtype")
        shape, offsets = spec.get("shape"), spec.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) <= 8):
            raise StateError(f"{name}: bad shape")
        if not all(type(d) is int and 0 <= d <= 1 << 40 for d in shape):
            raise StateError(f"{name}: bad shape")
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise StateError(f"{name}: bad offsets")
        lo, hi = offsets
        if not (type(lo) is int and type(hi) is int and 0 <= lo <= hi <= len(body)):
            raise StateError(f"{name}: offsets outside the data")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        total += count
        if total > max_elements:
            raise StateError(f"more than {max_elements:,} elements exported")
        if hi - lo != count * np.dtype(DTYPES[spec["dtype"]]).itemsize:
            raise StateError(f"{name}: {hi - lo} bytes do not fit its shape")
        spans.append((lo, hi))
        entries.append(Entry(name, spec["dtype"], tuple(shape), bytes(body[lo:hi])))
    for lo, hi in sorted(spans):  # no overlaps; the data is exactly the tensors' bytes
        if lo != end_of_last:
            raise StateError("the exported state's tensors overlap or leave gaps")
        end_of_last = hi
    if end_of_last != len(body):
        raise StateError("trailing bytes after the exported state's tensors")
    return entries


def elements(entries: list[Entry]) -> int:
    return sum(e.elements for e in entries)


def from_state_dict(state: dict[str, object]) -> list[Entry]:
    """Entries of a ``state_dict`` (runs in the train process: torch tensors, on any device)."""
    import torch

    names = {np.dtype(v).str: k for k, v in DTYPES.items() if k != "BF16"}
    out = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise StateError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
            out.append(Entry(str(name), "BF16", tuple(t.shape), raw))
            continue
        arr = t.numpy()
        key = names.get(arr.dtype.newbyteorder("<").str)
        if key is None:
            raise StateError(f"state_dict entry {name!r} has dtype {t.dtype}, not exportable")
        out.append(Entry(str(name), key, tuple(t.shape), arr.astype(DTYPES[key]).tobytes()))
    return out


def to_state_dict(entries: list[Entry]) -> dict[str, object]:
    """Torch tensors of the entries (runs in a score process)."""
    import torch

    out: dict[str, object] = {}
    for e in entries:
        arr = np.frombuffer(e.data, dtype=DTYPES[e.dtype]).reshape(e.shape).copy()
        t = torch.from_numpy(arr)
        out[e.name] = t.view(torch.bfloat16) if e.dtype == "BF16" else t
    return out
