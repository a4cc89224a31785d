"""A cycle pod's identity with mutual TLS on: it makes its own key at start and the controller
signs it with the cycle CA, for the identity the controller knows the pod by (its address and
owning Job, asked of a FAKE Kubernetes API: tests/kubefake.py). Real gRPC over TLS on loopback;
the controller's own store is moto's S3 endpoint."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from kubefake import fake_kube
from test_controller_cycle_store import CREDENTIALS, RUN, World, kube_config
from tls_material import CA, identity

from nasloop.config import Config, TlsConfig
from nasloop.rpc import NotFound, connect
from nasloop.rpc.tls import Authenticator, Identity, enrol
from nasloop.store import PermissionDenied, RemoteStore
from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc
from services.controller import cycle_store
from services.controller.kube import cycle_job_manifest
from services.controller.server import build
from services.local import free_port


class TlsWorld(World):
    ca: CA
    cycle_ca: CA
    cycle_port: int
    port: int


@pytest.fixture
def world(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsWorld]:
    monkeypatch.setattr(cycle_store, "IDENTITY_TTL_S", 0.0)
    ca, cycle_ca = CA(tmp_path / "pki", "services-ca"), CA(tmp_path / "pki", "cycle-ca")
    server = ca.issue("controller", identity("controller"), server=True)
    port, cycle_port = free_port(), free_port()
    data = kube_config(s3_endpoint, f"ci-{uuid.uuid4().hex[:12]}", cycle_port).model_dump(
        mode="json"
    )
    data["store"].update(CREDENTIALS)
    data["controller"]["cycle_port"] = cycle_port
    data["tls"] = {
        "enabled": True,
        "ca_file": str(ca.path),
        "cert_file": str(server.cert),
        "key_file": str(server.key),
        "cycle_ca_file": str(cycle_ca.path),
        "cycle_ca_key_file": str(cycle_ca.key_path),
    }
    cfg = Config.model_validate(data)
    with fake_kube() as fake:
        w = TlsWorld(fake, cfg, data["store"]["url"][len("s3://") :], s3_endpoint)
        w.ca, w.cycle_ca, w.port, w.cycle_port = ca, cycle_ca, port, cycle_port
        host, runs = build(cfg, port=port, cycle_jobs=w.jobs)
        host.start()
        host.set_serving()
        try:
            yield w
        finally:
            host.stop(1.0)
            runs.close()


def pod_tls(w: TlsWorld, root: Path) -> TlsConfig:
    """What a cycle pod is given: the services' CA (public) and where to keep its own key."""
    return TlsConfig(
        enabled=True,
        ca_file=str(w.ca.path),
        cert_file=str(root / "own" / "tls.crt"),
        key_file=str(root / "own" / "tls.key"),
    )


def test_a_cycle_pod_gets_its_identity_from_the_controller(world: TlsWorld, tmp_path: Path) -> None:
    world.cycle_pod(RUN, 1, "127.0.0.1")
    tls = pod_tls(world, tmp_path)
    store = RemoteStore(f"127.0.0.1:{world.cycle_port}", outage_s=1.0, tls=tls)
    store.put_bytes("runs/r1/cycles/1/x", b"over TLS, without a client certificate")
    enrol(tls, store.sign_cycle_certificate)
    assert (Path(tls.key_file).stat().st_mode & 0o777) == 0o600

    # The certificate names the pod's run and cycle, signed by the cycle CA.
    pem = Path(tls.cert_file).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(world.cycle_ca.cert)
    checker = Authenticator(world.cfg.tls)
    assert checker.identity_of(pem) == Identity("cycle", RUN, 1)

    # On the mutual-TLS port the controller knows it as that cycle: no run control for it.
    with connect(f"127.0.0.1:{world.port}", tls=tls, attempts=2) as channel:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ControllerStub(channel).ListRuns(pb.ListRunsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "cycle 1 of run r1 may not call" in e.value.details()
    store.close()


def test_a_cycle_job_with_tls_carries_the_public_ca_and_a_memory_volume_for_its_key(
    world: TlsWorld,
) -> None:
    manifest = cycle_job_manifest(RUN, 1, world.cfg)  # schema-checked by the fake on create
    pod = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["NASLOOP_TLS__CA_PEM"] == world.ca.path.read_text()
    assert env["NASLOOP_TLS__KEY_FILE"].startswith("/var/run/nasloop/identity/")
    assert "-----BEGIN" not in "".join(v for k, v in env.items() if k != "NASLOOP_TLS__CA_PEM")
    assert {"name": "identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod[
        "volumes"
    ]
    assert not any("secret" in v or "projected" in v for v in pod["volumes"])
    assert world.fake.create_job("nasloop", manifest)[0] == 201


def test_only_a_cycle_pod_gets_an_identity_and_only_the_store_answers_without_one(
    world: TlsWorld, tmp_path: Path
) -> None:
    tls = pod_tls(world, tmp_path)
    store = RemoteStore(f"127.0.0.1:{world.cycle_port}", outage_s=1.0, tls=tls)
    with pytest.raises(PermissionDenied, match="not a running cycle pod"):
        enrol(tls, store.sign_cycle_certificate)  # no cycle Job's pod at this address
    world.cycle_pod(RUN, 1, "127.0.0.1")
    with pytest.raises(Exception, match="not a PEM certificate request"):
        store.sign_cycle_certificate(b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n")
    # Without a client certificate the cert-free port answers the CycleStore only.
    with connect(f"127.0.0.1:{world.cycle_port}", tls=tls, client_cert=False) as channel:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ControllerStub(channel).StopRun(pb.StopRunRequest(name=RUN), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs a client certificate" in e.value.details()
    # And the mutual-TLS port takes no caller without one.
    with connect(f"127.0.0.1:{world.port}", tls=tls, client_cert=False) as channel:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ControllerStub(channel).ListRuns(pb.ListRunsRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    store.close()


def test_nasloop_cycle_enrols_before_it_reads_its_run(
    world: TlsWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nasloop cycle`` with exactly the Job's environment (its key's directory moved to a
    temporary one): it gets its identity from the controller first, then reads its run."""
    from services.controller.cli import commands

    world.cycle_pod(RUN, 1, "127.0.0.1")
    (container,) = cycle_job_manifest(RUN, 1, world.cfg)["spec"]["template"]["spec"]["containers"]
    for e in container["env"]:
        value = e["value"].replace("/var/run/nasloop/identity", str(tmp_path / "identity"))
        monkeypatch.setenv(e["name"], value)
    monkeypatch.delenv("NASLOOP_CONFIG", raising=False)
    args = argparse.Namespace(config=None, run=RUN, cycle=1, baseline=False)
    with pytest.raises(NotFound):  # no run r1 in the store: after the identity was made
        commands.cycle(args)
    pem = (tmp_path / "identity" / "tls.crt").read_bytes()
    assert Authenticator(world.cfg.tls).identity_of(pem) == Identity("cycle", RUN, 1)
