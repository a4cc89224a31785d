"""The store of cycle Jobs, served by the controller (``CycleStore``) so that no cycle pod holds
the store's keys: scopes, caller identity, and the real gRPC path between ``RemoteStore`` and a
controller whose own store is moto's S3 endpoint.

Who is a cycle pod is asked of a FAKE Kubernetes API (tests/kubefake.py; no cluster exists on
these machines). Its pods get the address the test gives them: 127.0.0.1 is the caller here,
127.0.0.2 is some other pod.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from kubefake import FakeKubeAPI, fake_kube

from nasloop import layout, rpc
from nasloop.config import Config, StoreConfig
from nasloop.rpc import InvalidArgument, Unavailable, connect
from nasloop.rpc.server import Registration
from nasloop.store import (
    InvalidKey,
    ObjectNotFound,
    PermissionDenied,
    RemoteStore,
    S3Store,
    open_store,
)
from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc
from services.controller import cycle_store
from services.controller.cycle_store import CallerIdentity, CycleScope, joined, peer_ip
from services.controller.kube import CycleJobs, cycle_job_manifest, cycle_job_name
from services.controller.server import build
from services.local import free_port

RUN = "r1"
Denied = rpc.PermissionDenied  # the service's error; the pod sees store.PermissionDenied
CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


# -- plain logic ---------------------------------------------------------------------------------
def test_a_cycle_writes_only_its_own_records_and_reads_its_run_adapters_and_corpora() -> None:
    scope = CycleScope(RUN, 1)
    for key in ("runs/r1/cycles/1/progress.json", "runs/r1/cycles/1/evaluated/3.json",
                "runs/r1/cycles/1/training-set.jsonl", "runs/r1/pairs/1.jsonl"):  # fmt: skip
        assert scope.check_write(key) == key == scope.check_read(key)
    for key in ("runs/r1/spec.yaml", "runs/r1/state.json", "runs/r1/stop",
                "runs/r1/cycles/2/summary.json", "runs/r1/pairs/2.jsonl",
                "runs/r1/pairs/1.jsonl.bak", "runs/r1/baseline/candidates.jsonl",
                "adapters/r1/2/manifest.json", "corpora/seed/manifest.json"):  # fmt: skip
        assert scope.check_read(key) == key
        with pytest.raises(Denied, match="cycle 1 of run r1 may not write"):
            scope.check_write(key)
    others = ["runs/r10/state.json", "runs/r2/spec.yaml", "adapters/r2/1/manifest.json"]
    others += ["models/base/manifest.json", "evaluations/job/task.json", "novelty/x/snapshot"]
    for key in others:
        with pytest.raises(Denied):
            scope.check_read(key)
        with pytest.raises(Denied):
            scope.check_write(key)
    assert scope.check_list("runs/r1/cycles/1/evaluated/") == "runs/r1/cycles/1/evaluated/"
    assert scope.check_list("runs/r1/pairs/") == "runs/r1/pairs/"
    assert scope.check_list("corpora/seed/") == "corpora/seed/"
    for prefix in ("", "runs/", "runs/r1", "adapters/", "models/"):
        with pytest.raises(Denied, match="may not list"):
            scope.check_list(prefix)
    for bad in ("runs/r1/../r2/state.json", "/runs/r1/x", "runs//r1", ""):
        with pytest.raises(InvalidArgument):
            scope.check_write(bad)


def test_the_baseline_writes_only_its_own_records() -> None:
    scope = CycleScope(RUN, layout.BASELINE)
    assert scope.check_write("runs/r1/baseline/evaluated/0.json")
    for key in ("runs/r1/pairs/0.jsonl", "runs/r1/cycles/1/candidates.jsonl", "runs/r1/state.json"):
        assert scope.check_read(key) == key
        with pytest.raises(Denied, match="the baseline of run r1 may not write"):
            scope.check_write(key)


@pytest.mark.parametrize(
    ("peer", "ip"),
    [
        ("ipv4:10.244.1.7:51234", "10.244.1.7"),
        ("ipv6:[fd00:10:244::7]:51234", "fd00:10:244::7"),
        ("ipv6:%5Bfd00::7%5D:51234", "fd00::7"),
        ("unix:/tmp/sock", None),
        ("", None),
    ],
)
def test_peer_ip(peer: str, ip: str | None) -> None:
    assert peer_ip(peer) == ip


def test_caller_identity_asks_the_api_once_per_ttl_and_refuses_strangers() -> None:
    asked: list[str] = []
    pods = {"10.0.0.5": (RUN, 1)}

    def lookup(ip: str) -> tuple[str, int] | None:
        asked.append(ip)
        return pods.get(ip)

    identity = CallerIdentity(lookup, ttl_s=3600)
    assert identity.cycle_of("ipv4:10.0.0.5:1000") == (RUN, 1)
    assert identity.cycle_of("ipv4:10.0.0.5:1001") == (RUN, 1)
    assert asked == ["10.0.0.5"]
    with pytest.raises(Denied, match="not a running cycle pod"):
        identity.cycle_of("ipv4:10.0.0.6:1000")
    with pytest.raises(Denied, match="no IP address"):
        identity.cycle_of("unix:/x")
    fresh = CallerIdentity(lookup, ttl_s=0)  # a pod that has ended is nobody at once
    assert fresh.cycle_of("ipv4:10.0.0.5:1") == (RUN, 1)
    del pods["10.0.0.5"]
    with pytest.raises(Denied):
        fresh.cycle_of("ipv4:10.0.0.5:1")

    def broken(ip: str) -> tuple[str, int] | None:
        raise OSError("connection refused")

    with pytest.raises(Unavailable, match="cannot tell who"):
        CallerIdentity(broken).cycle_of("ipv4:10.0.0.5:1")


def test_joined_takes_the_key_from_the_first_chunk_and_bounds_the_size() -> None:
    assert joined([("k/a", b"ab"), ("", b"cd"), ("k/a", b"e")]) == ("k/a", b"abcde")
    with pytest.raises(InvalidArgument, match="first chunk"):
        joined([("", b"ab")])
    with pytest.raises(InvalidArgument, match="two keys"):
        joined([("k/a", b""), ("k/b", b"")])
    with pytest.raises(InvalidArgument, match="larger than 4 bytes"):
        joined([("k/a", b"abc"), ("", b"de")], limit=4)


def test_controller_store_url_is_config() -> None:
    cfg = StoreConfig(url="controller://nasloop-controller:50055")
    store = open_store(cfg)
    assert isinstance(store, RemoteStore) and store.address == "nasloop-controller:50055"
    store.close()
    with pytest.raises(ValueError, match="needs an address"):
        StoreConfig(url="controller://")


# -- over gRPC ------------------------------------------------------------------------------------
def kube_config(s3_endpoint: str, bucket: str, port: int) -> Config:
    return Config.model_validate(
        {
            "store": {"url": f"s3://{bucket}", "endpoint": s3_endpoint, **CREDENTIALS},
            "controller": {
                "mode": "kubernetes",
                "kubernetes": {
                    "namespace": "nasloop",
                    "poll_interval_s": 0.05,
                    "controller_address": f"127.0.0.1:{port}",
                },
            },
        }
    )


class World:
    def __init__(self, fake: FakeKubeAPI, cfg: Config, bucket: str, s3_endpoint: str) -> None:
        self.fake, self.cfg = fake, cfg
        self.s3 = S3Store(s3_endpoint, bucket, **CREDENTIALS)
        self.jobs = CycleJobs(fake.api_client(), cfg)

    def cycle_pod(self, run: str, cycle: int, ip: str) -> str:
        """The cycle Job of ``run`` and its pod, Running at ``ip``."""
        self.jobs.ensure(run, cycle)
        name = cycle_job_name(run, cycle)
        self.fake.start_pod(name, pod_ip=ip)
        return name


@pytest.fixture
def world(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setattr(cycle_store, "IDENTITY_TTL_S", 0.0)  # see every change of a pod at once
    bucket = f"cs-{uuid.uuid4().hex[:12]}"
    port = free_port()
    with fake_kube() as fake:
        cfg = kube_config(s3_endpoint, bucket, port)
        w = World(fake, cfg, bucket, s3_endpoint)
        host, runs = build(cfg, port=port, cycle_jobs=w.jobs)
        host.start()
        host.set_serving()
        try:
            yield w
        finally:
            host.stop(1.0)
            runs.close()


def remote(world: World) -> RemoteStore:
    """The store exactly as the cycle Job's manifest describes it (its env, nothing else)."""
    env = {e["name"]: e.get("value") for e in cycle_job_manifest(RUN, 1, world.cfg)["spec"]
           ["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert not any("KEY" in name or "SECRET" in name for name in env), env
    store = open_store(StoreConfig(url=env["NASLOOP_STORE__URL"]))
    assert isinstance(store, RemoteStore)
    store.outage_s = 1.0
    return store


def test_a_cycle_pod_reads_and_writes_its_run_through_the_controller(world: World) -> None:
    world.cycle_pod(RUN, 1, "127.0.0.1")
    world.s3.put_bytes("corpora/seed/manifest.json", b'{"files": {}}')
    world.s3.put_bytes("adapters/r1/1/manifest.json", b"{}")
    store = remote(world)
    big = bytes(range(256)) * (3 * 4096 + 17)  # ≈ 3 MiB: several chunks each way
    info = store.put_bytes("runs/r1/cycles/1/candidates.jsonl", big)
    assert info.size == len(big)
    assert world.s3.get_bytes("runs/r1/cycles/1/candidates.jsonl") == big  # in the real store
    assert store.get_bytes("runs/r1/cycles/1/candidates.jsonl") == big
    store.put_bytes("runs/r1/cycles/1/empty", b"")
    assert store.get_bytes("runs/r1/cycles/1/empty") == b""
    store.put_json("runs/r1/cycles/1/evaluated/0001.json", {"a": 1})
    assert store.get_json("runs/r1/cycles/1/evaluated/0001.json") == {"a": 1}
    assert store.list("runs/r1/cycles/1/") == [
        "runs/r1/cycles/1/candidates.jsonl",
        "runs/r1/cycles/1/empty",
        "runs/r1/cycles/1/evaluated/0001.json",
    ]
    assert store.exists("runs/r1/cycles/1/empty") and not store.exists("runs/r1/nothing")
    store.delete("runs/r1/cycles/1/empty")
    store.delete("runs/r1/cycles/1/empty")  # a missing key is not an error
    assert not world.s3.exists("runs/r1/cycles/1/empty")
    assert store.get_bytes("corpora/seed/manifest.json") == b'{"files": {}}'
    assert store.get_manifest("adapters/r1/1") == {}
    with pytest.raises(ObjectNotFound):
        store.get_bytes("runs/r1/nothing")
    store.close()


def test_a_cycle_pod_is_refused_outside_its_run(world: World) -> None:
    world.cycle_pod(RUN, 1, "127.0.0.1")
    world.s3.put_bytes("runs/r2/state.json", b"{}")
    store = remote(world)
    world.s3.put_bytes("runs/r1/spec.yaml", b"name: r1")
    for op in (
        lambda: store.put_bytes("runs/r1/spec.yaml", b"base_model: models/evil"),
        lambda: store.put_bytes("runs/r1/state.json", b"{}"),
        lambda: store.put_bytes("runs/r1/cycles/2/summary.json", b"{}"),
        lambda: store.delete("runs/r1/spec.yaml"),
        lambda: store.get_bytes("runs/r2/state.json"),
        lambda: store.exists("runs/r2/state.json"),
        lambda: store.put_bytes("runs/r2/state.json", b"x"),
        lambda: store.put_bytes("adapters/r1/1/manifest.json", b"forged"),
        lambda: store.put_bytes("models/base/manifest.json", b"forged"),
        lambda: store.delete("runs/r2/state.json"),
        lambda: store.list("runs/"),
        lambda: store.list(""),
    ):
        with pytest.raises(PermissionDenied):
            op()
    assert world.s3.get_bytes("runs/r2/state.json") == b"{}"
    assert world.s3.get_bytes("runs/r1/spec.yaml") == b"name: r1"
    assert store.get_bytes("runs/r1/spec.yaml") == b"name: r1"  # its own run: readable
    assert not world.s3.exists("adapters/r1/1/manifest.json")
    with pytest.raises(InvalidKey):  # refused before it leaves the pod
        store.put_bytes("runs/r1/cycles/1/../x", b"x")
    store.put_bytes("runs/r1/cycles/1/ok", b"still served")  # after every refusal
    assert world.s3.get_bytes("runs/r1/cycles/1/ok") == b"still served"
    store.close()


def test_only_a_running_cycle_pod_at_the_callers_address_is_served(world: World) -> None:
    store = remote(world)
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        store.get_bytes("runs/r1/state.json")  # no cycle Job at all
    name = world.cycle_pod(RUN, 1, "127.0.0.2")  # another pod's address
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        store.put_bytes("runs/r1/cycles/1/x", b"x")
    world.fake.delete_pods(name)
    world.fake.start_pod(name, pod_ip="127.0.0.1")
    store.put_bytes("runs/r1/cycles/1/x", b"x")
    world.fake.succeed(name)  # the Job ended: its address no longer counts
    with pytest.raises(PermissionDenied):
        store.put_bytes("runs/r1/cycles/1/x", b"y")
    assert world.s3.get_bytes("runs/r1/cycles/1/x") == b"x"
    store.close()


def test_a_pod_that_only_looks_like_a_cycle_pod_is_nobody(world: World) -> None:
    """Kubernetes API faked (tests/kubefake.py): pods labelled as cycle 1 of r1, at the
    caller's address, but not owned by the Job the controller created, or on the node's
    network, are refused; the real one is served."""
    store = remote(world)
    manifest = cycle_job_manifest(RUN, 1, world.cfg)
    manifest["metadata"]["name"] = "impostor"  # another Job (any Job-creating token)
    assert world.fake.create_job("nasloop", manifest)[0] == 201
    world.fake.start_pod("impostor", pod_ip="127.0.0.1")
    world.jobs.ensure(RUN, 1)  # the controller's own Job for cycle 1 exists too
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        store.put_bytes("runs/r1/cycles/1/x", b"impostor")
    world.fake.delete_pods("impostor")

    name = cycle_job_name(RUN, 1)  # the controller's Job, its pod on the host network
    world.fake.start_pod(name, pod_ip="127.0.0.1", host_network=True)
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        store.put_bytes("runs/r1/cycles/1/x", b"host network")
    world.fake.delete_pods(name)

    # The Job deleted and re-created under its name by someone else: not the uid recorded.
    world.fake.delete_job("nasloop", name, None)
    assert world.fake.create_job("nasloop", cycle_job_manifest(RUN, 1, world.cfg))[0] == 201
    world.fake.start_pod(name, pod_ip="127.0.0.1")
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        store.put_bytes("runs/r1/cycles/1/x", b"re-created")
    assert not world.s3.exists("runs/r1/cycles/1/x")

    world.jobs.ensure(RUN, 1)  # the controller re-attaches to it: now it is the cycle's Job
    store.put_bytes("runs/r1/cycles/1/x", b"ours")
    assert world.s3.get_bytes("runs/r1/cycles/1/x") == b"ours"
    store.close()


def test_the_cycle_store_answers_bad_requests_with_statuses_and_keeps_serving(
    world: World,
) -> None:
    world.cycle_pod(RUN, 1, "127.0.0.1")
    port = world.cfg.controller.kubernetes.controller_address.rsplit(":", 1)[1]
    stub = pb_grpc.CycleStoreStub(connect(f"127.0.0.1:{port}"))
    cases = [
        (lambda: stub.StatObject(pb.ObjectKey(key="../x")), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.StatObject(pb.ObjectKey(key="")), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.PutObject(iter([pb.ObjectChunk(data=b"no key")])),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.PutObject(iter([])), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: list(stub.GetObject(pb.ObjectKey(key="runs/r1/none"))), grpc.StatusCode.NOT_FOUND),
        (lambda: stub.ListObjects(pb.ListObjectsRequest(prefix="runs/")),
         grpc.StatusCode.PERMISSION_DENIED),
    ]  # fmt: skip
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code, e.value.details()
    assert stub.StatObject(pb.ObjectKey(key="runs/r1/none")).exists is False


def test_the_cycle_store_is_served_only_in_cluster_mode(tmp_path, world: World) -> None:  # type: ignore[no-untyped-def]
    def served(host) -> list[str]:  # type: ignore[no-untyped-def]
        return [r.full_name for r in host.registrations if isinstance(r, Registration)]

    local = Config.model_validate({"store": {"url": f"file://{tmp_path}"}})
    host, runs = build(local, port=0)
    assert served(host) == ["nasloop.v1.Controller"]
    runs.close()
    cluster, runs = build(world.cfg, port=0, cycle_jobs=world.jobs)
    assert served(cluster) == ["nasloop.v1.Controller", "nasloop.v1.CycleStore"]
    runs.close()
