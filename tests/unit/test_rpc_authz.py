"""The per-RPC rule table (nasloop/rpc/authz.py) and identity parsing (nasloop/rpc/tls.py)."""

from __future__ import annotations

import pytest

from nasloop.rpc import PermissionDenied
from nasloop.rpc.authz import CYCLE_RULES, Policy
from nasloop.rpc.tls import Identity, parse_identity
from nasloop.v1 import (
    common_pb2,
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


def _adapter(prefix: str) -> common_pb2.AdapterRef:
    return common_pb2.AdapterRef(prefix=prefix)


def _start(**fields: object) -> trainer_pb2.StartJobRequest:
    own = {
        "job_id": "a-c2-train",
        "output_prefix": "adapters/a/2",
        "run": "a",
        "cycle": 2,
        "training_pairs": common_pb2.ObjectRef(key="runs/a/cycles/2/training-set.jsonl"),
    }
    return trainer_pb2.StartJobRequest(**{**own, **fields})  # type: ignore[arg-type]


G, N, T = "nasloop.v1.Generator", "nasloop.v1.Novelty", "nasloop.v1.Trainer"


@pytest.mark.parametrize(
    ("service", "method", "request_"),
    [
        # run "a-c1" is another run whose name starts with run "a"'s adapter name
        (G, "LoadAdapter", generator_pb2.LoadAdapterRequest(name="a-c1-c1", prefix="adapters/a/1")),
        (G, "LoadAdapter", generator_pb2.LoadAdapterRequest(name="a-c1", prefix="adapters/a-c1/1")),
        (G, "LoadAdapter", generator_pb2.LoadAdapterRequest(name="a-c1", prefix="adapters/a")),
        (
            G,
            "LoadAdapter",
            generator_pb2.LoadAdapterRequest(name="a-c1", prefix="adapters/a/../b/1"),
        ),
        (
            G,
            "LoadAdapter",
            generator_pb2.LoadAdapterRequest(name="a-c1", prefix="adapters/a//../b/1"),
        ),
        (G, "UnloadAdapter", generator_pb2.UnloadAdapterRequest(name="a-c1-c3")),
        (G, "UnloadAdapter", generator_pb2.UnloadAdapterRequest(name="a")),
        (N, "Add", novelty_pb2.AddRequest(namespace="run-a-c1")),
        (N, "CreateNamespace", novelty_pb2.CreateNamespaceRequest(name="run-a/")),
        (T, "CancelJob", trainer_pb2.CancelJobRequest(job_id="a-c1-c2-train")),
        (T, "StartJob", _start(output_prefix="adapters/a-c1/2")),
        (T, "StartJob", _start(output_prefix="adapters/a/2/../../b/3")),
        (T, "StartJob", _start(output_prefix="adapters/a/22")),
        (T, "StartJob", _start(training_pairs=common_pb2.ObjectRef(key="runs/a-c1/pairs/1.jsonl"))),
        (T, "StartJob", _start(training_pairs=common_pb2.ObjectRef(key="runs/a/../b/x.jsonl"))),
        (T, "StartJob", _start(parent=_adapter("adapters/a-c1/1"))),
        (T, "StartJob", _start(parent=_adapter("adapters/a/../b/1"))),
        (T, "StartJob", _start(adapter_name="a-c1-c2")),
    ],
)
def test_a_run_whose_name_prefixes_another_runs_reaches_only_its_own(
    service: str, method: str, request_: object
) -> None:
    """Run ``a``'s cycle against run ``a-c1``'s names and ``..``/``//`` keys: every one refused
    (an unanchored prefix or name check lets one through)."""
    with pytest.raises(PermissionDenied):
        Policy().check(service, method, Identity("cycle", "a", 2), request_)
    Policy().check(T, "StartJob", Identity("cycle", "a", 2), _start())  # its own: allowed
    Policy().check(T, "StartJob", Identity("cycle", "a", 2), _start(adapter_name="a-c2"))
