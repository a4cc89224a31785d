"""The answer a fake generator client gives, for the controller's loop tests."""

from __future__ import annotations

from nasloop.records import sha256_text
from nasloop.v1 import generator_pb2


def answer(
    request: generator_pb2.GenerateRequest, i: int, prompt: str
) -> generator_pb2.GeneratedCandidate:
    """Answer ``i`` of ``request`` as the generator records it: the id the controller named,
    the run, cycle and per-answer seed, and the hash of ``prompt``; code and text left to the
    caller."""
    out = generator_pb2.GeneratedCandidate(index=i, finish_reason="stop")
    c = out.candidate
    c.id = request.ids[i]
    c.provenance.run, c.provenance.cycle = request.run, request.cycle
    c.provenance.seed = request.sampling.seed + i
    c.provenance.prompt_sha256 = sha256_text(prompt)
    return out
