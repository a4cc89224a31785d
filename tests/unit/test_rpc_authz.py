"""The per-RPC rule table (nasloop/rpc/authz.py) and identity parsing (nasloop/rpc/tls.py)."""

from __future__ import annotations

import pytest

from nasloop.rpc import PermissionDenied
from nasloop.rpc.authz import CYCLE_RULES, Policy
from nasloop.rpc.tls import Identity, parse_identity
from nasloop.v1 import (
    controller_pb2,
    evaluator_pb2,
    generator_pb2,
    novelty_pb2,
    trainer_pb2,
)

MODULES = (controller_pb2, evaluator_pb2, generator_pb2, novelty_pb2, trainer_pb2)


def test_every_rpc_of_every_service_has_a_cycle_rule() -> None:
    """A new RPC must get a decision in the table (unlisted ones are refused to cycles)."""
    rpcs = {
        (s.full_name, m.name)
        for pb in MODULES
        for s in pb.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert set(Policy().methods()) == rpcs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("nasloop://rel/controller", Identity("controller")),
        ("nasloop://rel/cycle/run-a/3", Identity("cycle", "run-a", 3)),
        ("nasloop://rel/cycle/run-a/0", Identity("cycle", "run-a", 0)),
    ],
)
def test_identities(uri: str, expected: Identity) -> None:
    assert parse_identity(uri, "rel") == expected


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://rel/controller",
        "nasloop://other/controller",
        "nasloop://rel/admin",
        "nasloop://rel/cycle/run-a",
        "nasloop://rel/cycle/Run_A/1",
        "nasloop://rel/cycle/run-a/10000",
        "nasloop://rel/cycle/run-a/1/x",
        "nasloop://rel/controller/x",
    ],
)
def test_not_identities(uri: str) -> None:
    with pytest.raises(PermissionDenied):
        parse_identity(uri, "rel")


def test_an_unknown_service_is_closed_to_cycles_and_open_to_admins() -> None:
    policy = Policy()
    policy.check("nasloop.v1.New", "Do", Identity("operator"), None)
    with pytest.raises(PermissionDenied, match=r"may not call nasloop\.v1\.New/Do"):
        policy.check("nasloop.v1.New", "Do", Identity("cycle", "r", 1), None)
    assert set(CYCLE_RULES) >= {"nasloop.v1.Trainer", "nasloop.v1.Novelty"}
