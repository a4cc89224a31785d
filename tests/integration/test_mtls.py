"""Mutual TLS and per-RPC authorisation over real gRPC on loopback (issue 20, item 1).

The controller, generator (transformers backend, the tiny bootstrap LM), novelty index and
trainer serve with TLS on, all on one real S3 store (moto). A client certificate of cycle 2 of
run A, signed by the cycle identities' CA, tries every action that would touch run B: publish
under ``adapters/run-b/`` through the trainer, load or replace B's adapter in the generator,
delete, remove from or add to B's novelty namespace and the corpus, stop, resume or start runs.
Each is refused with PERMISSION_DENIED, and B's run, adapters and namespace are unchanged
afterwards. Callers without a valid certificate never get in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from candidates import GOOD_NET
from generator_world import World, build_world, publish_adapter
from tls_material import CA, identity, tls_env

from nasloop import layout
from nasloop.config import TlsConfig, load_config
from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import controller_pb2 as cpb
from nasloop.v1 import controller_pb2_grpc as cpb_grpc
from nasloop.v1 import generator_pb2 as gpb
from nasloop.v1 import generator_pb2_grpc as gpb_grpc
from nasloop.v1 import novelty_pb2 as npb
from nasloop.v1 import novelty_pb2_grpc as npb_grpc
from nasloop.v1 import trainer_pb2 as tpb
from nasloop.v1 import trainer_pb2_grpc as tpb_grpc
from services.controller import server as controller_server
from services.controller.loop import state as st
from services.controller.runs import create_run, stop_key
from services.controller.runspec import load_spec
from services.generator import server as generator_server
from services.novelty import server as novelty_server
from services.trainer import server as trainer_server

A, B = "run-a", "run-b"
CORPUS = "corpus"


class Cluster:
    def __init__(self, root: Path, world: World) -> None:
        self.root = root
        self.world = world
        self.ca = CA(root / "pki", "services-ca")
        self.cycle_ca = CA(root / "pki", "cycle-ca")
        self.hosts: list[Any] = []
        self.ports: dict[str, int] = {}
        self.close: list[Callable[[], None]] = []

    def config(self, issued, **env: str):  # type: ignore[no-untyped-def]
        return load_config(env={**self.world.env, **tls_env(self.ca, issued, self.cycle_ca), **env})

    def serve(self, name: str, host: Any) -> None:
        self.ports[name] = host.start()
        host.set_serving()
        self.hosts.append(host)

    def client_tls(self, issued) -> TlsConfig:  # type: ignore[no-untyped-def]
        return TlsConfig(
            enabled=True,
            ca_file=str(self.ca.path),
            cert_file=str(issued.cert),
            key_file=str(issued.key),
        )

    def channel(self, service: str, issued) -> grpc.Channel:  # type: ignore[no-untyped-def]
        return connect(f"localhost:{self.ports[service]}", tls=self.client_tls(issued), attempts=2)


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("mtls")
    world = build_world(s3_endpoint, root)
    c = Cluster(root, world)
    for run in (A, B):
        publish_adapter(
            world.store, world.model_dir, layout.adapter_prefix(run, 1), 8, 7, world.base_sha256
        )
        create_run(world.store, load_spec("local").model_copy(update={"name": run}))

    def server_cert(name: str):  # type: ignore[no-untyped-def]
        return c.ca.issue(name, identity(name), server=True)

    cfg = c.config(
        server_cert("novelty"),
        NASLOOP_NOVELTY__FINGERPRINT_WORKERS="0",
        NASLOOP_SERVER__HEALTH_PORT="0",
    )
    host, engine = novelty_server.build(cfg, port=0)
    engine.open()
    c.serve("novelty", host)
    c.health_port = host.health_port  # type: ignore[attr-defined]

    cfg = c.config(server_cert("trainer"), NASLOOP_TRAINER__CACHE_DIR=str(root / "trainer"))
    host, _ = trainer_server.build(cfg, port=0)
    c.serve("trainer", host)

    cfg = c.config(server_cert("generator"), NASLOOP_GENERATOR__BACKEND="transformers")
    host, generator, loop = generator_server.build(cfg, port=0)
    loop.run(generator.start())
    c.serve("generator", host)

    cfg = c.config(server_cert("controller"))
    host, runs = controller_server.build(cfg, port=0)
    c.serve("controller", host)
    c.runs = runs  # type: ignore[attr-defined]

    c.controller = c.ca.issue("controller-client", identity("controller"))  # type: ignore[attr-defined]
    c.cycle_a = c.cycle_ca.issue("cycle-a", identity(f"cycle/{A}/2"))  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        for h in reversed(c.hosts):
            h.stop(0)


def refused(call: Callable[..., Any], *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        result = call(*args, timeout=20)
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            list(result)
    return e.value


def assert_denied(call: Callable[..., Any], *args: Any, says: str = "") -> None:
    e = refused(call, *args)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, (e.code(), e.details())
    assert says in e.details(), e.details()


def seed_novelty(stub: npb_grpc.NoveltyStub) -> None:
    for ns, ids in ((CORPUS, ["c1", "c2"]), (layout.run_namespace(B), ["b1", "b2"])):
        stub.CreateNamespace(npb.CreateNamespaceRequest(name=ns))
        items = [
            npb.BatchCheckAndAddRequest.Item(id=i, code=f"class Net{i}: pass  # {i * 40}")
            for i in ids
        ]
        stub.Add(npb.AddRequest(namespace=ns, items=items, skip_existing=True))


def test_a_cycle_of_run_a_cannot_touch_run_b(cluster: Cluster) -> None:
    c = cluster
    admin = {s: c.channel(s, c.controller) for s in c.ports}  # type: ignore[attr-defined]
    mine = {s: c.channel(s, c.cycle_a) for s in c.ports}  # type: ignore[attr-defined]
    store = c.world.store

    # Run B's state as the controller leaves it: its adapter live, its namespace seeded.
    gen = gpb_grpc.GeneratorStub(admin["generator"])
    b_prefix = layout.adapter_prefix(B, 1)
    b_sha = store.manifest_sha256(b_prefix)
    gen.LoadAdapter(gpb.LoadAdapterRequest(name=layout.adapter_name(B, 1), prefix=b_prefix))
    nov = npb_grpc.NoveltyStub(admin["novelty"])
    seed_novelty(nov)
    before = {
        "adapters": sorted(store.list(f"adapters/{B}/")),
        "manifest": store.manifest_sha256(b_prefix),
        "run": st.load_run_state(store, B),
        "loaded": {
            (a.name, a.ref.sha256) for a in gen.ListAdapters(gpb.ListAdaptersRequest()).adapters
        },
        "namespaces": {
            ns: nov.GetNamespace(npb.GetNamespaceRequest(name=ns)).entries
            for ns in (CORPUS, layout.run_namespace(B))
        },
    }

    # Trainer: publish under adapters/run-b/ (and other ways around the rule).
    trainer = tpb_grpc.TrainerStub(mine["trainer"]).StartJob
    pairs = common.ObjectRef(key=layout.training_set_key(A, 2), sha256="0" * 64, size=10)
    good = dict(
        job_id=layout.training_job_id(A, 2), base_model="models/tiny", training_pairs=pairs,
        output_prefix=layout.adapter_prefix(A, 2), run=A, cycle=2,
    )  # fmt: skip
    for bad, says in (
        ({"output_prefix": layout.adapter_prefix(B, 2)}, "output prefix"),
        ({"output_prefix": "adapters/run-a/../run-b/2"}, "output prefix"),
        ({"output_prefix": layout.adapter_prefix(A, 3)}, "output prefix"),
        ({"run": B, "output_prefix": layout.adapter_prefix(B, 2)}, "output prefix"),
        ({"job_id": layout.training_job_id(B, 2)}, "job id"),
    ):
        assert_denied(trainer, tpb.StartJobRequest(**{**good, **bad}), says=says)
    cancel = tpb_grpc.TrainerStub(mine["trainer"]).CancelJob
    assert_denied(cancel, tpb.CancelJobRequest(job_id=layout.training_job_id(B, 1)))

    # Generator: load or replace B's adapter, load B's files under A's name, unload B's.
    g = gpb_grpc.GeneratorStub(mine["generator"])
    for name, prefix in (
        (layout.adapter_name(B, 1), b_prefix),
        (layout.adapter_name(B, 2), layout.adapter_prefix(A, 1)),
        (layout.adapter_name(A, 1), b_prefix),
    ):
        req = gpb.LoadAdapterRequest(name=name, prefix=prefix, replace=True)
        assert_denied(g.LoadAdapter, req)
    assert_denied(g.UnloadAdapter, gpb.UnloadAdapterRequest(name=layout.adapter_name(B, 1)))

    # Novelty: B's namespace and the corpus take no write from A.
    n = npb_grpc.NoveltyStub(mine["novelty"])
    item = npb.BatchCheckAndAddRequest.Item(id="x", code="class Evil: pass")
    for ns in (layout.run_namespace(B), CORPUS):
        assert_denied(n.DeleteNamespace, npb.DeleteNamespaceRequest(name=ns))
        assert_denied(n.Remove, npb.RemoveRequest(namespace=ns, ids=["b1", "c1"]))
        assert_denied(n.Add, npb.AddRequest(namespace=ns, items=[item]), says="read-only")
        assert_denied(n.BatchCheckAndAdd, npb.BatchCheckAndAddRequest(namespace=ns, items=[item]))
        assert_denied(n.CheckAndAdd, npb.CheckAndAddRequest(namespace=ns, id="x", code="y"))
        assert_denied(n.CreateNamespace, npb.CreateNamespaceRequest(name=ns))
    assert_denied(n.Snapshot, npb.SnapshotRequest())

    # Controller: no run may be stopped, resumed or started by a cycle.
    ctl = cpb_grpc.ControllerStub(mine["controller"])
    assert_denied(ctl.StopRun, cpb.StopRunRequest(name=B, now=True))
    assert_denied(ctl.ResumeRun, cpb.ResumeRunRequest(name=B))
    assert_denied(ctl.StartRun, cpb.StartRunRequest(spec=cpb.RunSpec(name="run-c", preset="local")))
    assert_denied(ctl.ListRuns, cpb.ListRunsRequest())

    # Run B is as it was.
    assert sorted(store.list(f"adapters/{B}/")) == before["adapters"]
    assert store.manifest_sha256(b_prefix) == before["manifest"] == b_sha
    assert not store.list(f"adapters/{B}/2")
    assert st.load_run_state(store, B) == before["run"]
    assert not store.exists(stop_key(B)) and not c.runs.is_active(B)  # type: ignore[attr-defined]
    loaded = {(a.name, a.ref.sha256) for a in gen.ListAdapters(gpb.ListAdaptersRequest()).adapters}
    assert loaded == before["loaded"] and (layout.adapter_name(B, 1), b_sha) in loaded
    for ns, entries in before["namespaces"].items():
        assert nov.GetNamespace(npb.GetNamespaceRequest(name=ns)).entries == entries

    # What a cycle of run A needs still gets through the guard to the services.
    n.CreateNamespace(npb.CreateNamespaceRequest(name=layout.run_namespace(A)), timeout=20)
    mine_item = npb.BatchCheckAndAddRequest.Item(id="a1", code=GOOD_NET)
    request = npb.BatchCheckAndAddRequest(
        namespace=layout.run_namespace(A), consult=[CORPUS], items=[mine_item]
    )
    assert n.BatchCheckAndAdd(request, timeout=20).results[0].added
    info = g.LoadAdapter(
        gpb.LoadAdapterRequest(name=layout.adapter_name(A, 1), prefix=layout.adapter_prefix(A, 1)),
        timeout=60,
    )
    assert info.name == layout.adapter_name(A, 1)
    e = refused(trainer, tpb.StartJobRequest(**good))  # passes the guard; no such pairs object
    assert e.code() != grpc.StatusCode.PERMISSION_DENIED, e.details()


def test_callers_without_a_valid_certificate_are_refused(cluster: Cluster) -> None:
    c = cluster
    target = f"localhost:{c.ports['novelty']}"
    request = npb.GetNamespaceRequest(name=CORPUS)

    # No client certificate, or one from a CA nasloop does not trust: no handshake.
    stranger = CA(c.root / "pki-stranger", "stranger-ca")
    forged = stranger.issue("forged-controller", identity("controller"))
    no_cert = grpc.ssl_channel_credentials(root_certificates=c.ca.path.read_bytes())
    foreign = grpc.ssl_channel_credentials(
        root_certificates=c.ca.path.read_bytes(),
        private_key=forged.key.read_bytes(),
        certificate_chain=forged.cert.read_bytes(),
    )
    for creds in (no_cert, foreign):
        with grpc.secure_channel(target, creds) as channel:
            e = refused(npb_grpc.NoveltyStub(channel).GetNamespace, request)
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
    with grpc.insecure_channel(target) as channel:  # plaintext
        e = refused(npb_grpc.NoveltyStub(channel).GetNamespace, request)
        assert e.code() == grpc.StatusCode.UNAVAILABLE

    # A valid certificate whose identity its CA may not sign, or that names none, or another
    # deployment's: the handshake succeeds, every call is refused.
    for issued, says in (
        (c.cycle_ca.issue("cycle-claims-controller", identity("controller")), "services' CA"),
        (c.ca.issue("service-ca-signs-cycle", identity(f"cycle/{A}/2")), "cycle identities' CA"),
        (c.ca.issue("no-identity", None), "exactly one"),
        (c.ca.issue("other-release", "nasloop://other/controller"), "belongs to"),
        (c.ca.issue("unknown-role", identity("admin")), "names no nasloop role"),
    ):
        with c.channel("novelty", issued) as channel:
            assert_denied(npb_grpc.NoveltyStub(channel).GetNamespace, request, says=says)

    # The service serves on: the controller's identity gets its answer.
    with c.channel("novelty", c.controller) as channel:  # type: ignore[attr-defined]
        assert npb_grpc.NoveltyStub(channel).GetNamespace(request, timeout=20).name == CORPUS


def test_an_identity_in_the_common_name_counts_and_two_identities_are_none(
    cluster: Cluster,
) -> None:
    """Helm's genSignedCert writes no URI SAN: the chart's certificates name the identity as
    their common name."""
    c = cluster
    request = npb.DeleteNamespaceRequest(name="nothing-here")
    by_cn = c.ca.issue("cn-controller", None, cn=identity("controller"))
    with c.channel("novelty", by_cn) as channel:
        e = refused(npb_grpc.NoveltyStub(channel).DeleteNamespace, request)
        assert e.code() == grpc.StatusCode.NOT_FOUND  # the controller may: past the guard
    cycle_by_cn = c.cycle_ca.issue("cn-cycle", None, cn=identity(f"cycle/{A}/2"))
    with c.channel("novelty", cycle_by_cn) as channel:
        assert_denied(npb_grpc.NoveltyStub(channel).DeleteNamespace, request, says="cycle 2")
    two = c.ca.issue("two", identity("operator"), cn=identity("controller"))
    with c.channel("novelty", two) as channel:
        assert_denied(npb_grpc.NoveltyStub(channel).DeleteNamespace, request, says="names 2")


def test_the_plaintext_health_port_answers_health_only(cluster: Cluster) -> None:
    """The kubelet's gRPC probes speak no TLS: a plaintext port answers the health service and
    refuses everything else."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{cluster.health_port}") as channel:  # type: ignore[attr-defined]
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
        stub = npb_grpc.NoveltyStub(channel)
        assert_denied(stub.GetNamespace, npb.GetNamespaceRequest(name=CORPUS), says="certificate")
        assert_denied(stub.DeleteNamespace, npb.DeleteNamespaceRequest(name=CORPUS))


def test_services_identities_call_nothing(cluster: Cluster) -> None:
    """A service's own certificate (say, a compromised trainer's) opens nothing but health."""
    c = cluster
    trainer_id = c.ca.issue("trainer-as-client", identity("trainer"))
    with c.channel("controller", trainer_id) as channel:
        ctl = cpb_grpc.ControllerStub(channel)
        assert_denied(ctl.StopRun, cpb.StopRunRequest(name=B), says="trainer identity")
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
