"""The seed grammar's output is pinned to the byte: a refactoring of grammar.py must not change it.

The digest covers 300 networks drawn by ``grammar.sample`` from ``random.Random(0)`` (every
family and most choices) and the ids and codes of ``grammar.generate(40, seed=0)``. A change
that is meant to change the generated code updates the digests here, and says so.
"""

from __future__ import annotations

import hashlib
import random

from nasloop.corpus import grammar

SAMPLED_300 = "c663eda2221cecd7280938fcea673f9692a47b9aa532f2eecc5b08f3ecd7978f"
GENERATED_40 = "906054a3586fc699625a0fe746ce0c600ce9337e4b65cf11d6d6867e32e8f1ca"


def _digest(pairs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, code in pairs:
        h.update(name.encode() + b"\0" + code.encode() + b"\0")
    return h.hexdigest()


def test_sampled_networks_are_unchanged() -> None:
    rng = random.Random(0)
    assert _digest([grammar.sample(rng) for _ in range(300)]) == SAMPLED_300


def test_generated_networks_are_unchanged() -> None:
    nets = grammar.generate(40, seed=0)
    assert _digest([(f"{n.id} {n.family}", n.code) for n in nets]) == GENERATED_40
