"""The novelty service end to end: `nasloop serve novelty` as a real process, persisting to a
real S3 endpoint (moto's server) and called with the real client over a loopback socket."""

from __future__ import annotations

import signal
import threading

import grpc
import pytest
from cnn_sources import generate_sources, renamed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from servers import Server, novelty_server

from nasloop.rpc import connect
from nasloop.v1 import novelty_pb2 as pb
from nasloop.v1 import novelty_pb2_grpc as pb_grpc

SOURCES = list(generate_sources(30, seed=11))


def stub_for(server: Server) -> tuple[grpc.Channel, pb_grpc.NoveltyStub]:
    ch = connect(server.address)
    return ch, pb_grpc.NoveltyStub(ch)


def expect_error(code: grpc.StatusCode, fragment: str, fn, *args) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()


def test_every_rpc(server: Server) -> None:
    ch, stub = stub_for(server)
    with ch:
        info = stub.CreateNamespace(pb.CreateNamespaceRequest(name="corpus"))
        assert info.params.shingle_size == 7 and info.params.num_perm == 128
        assert info.params.mode == pb.TOKEN_MODE_CANONICAL
        assert abs(info.params.threshold - 0.85) < 1e-9
        stub.CreateNamespace(pb.CreateNamespaceRequest(name="run-1"))
        added = stub.Add(
            pb.AddRequest(
                namespace="corpus",
                items=[
                    pb.BatchCheckAndAddRequest.Item(id=f"s{i}", code=SOURCES[i]) for i in range(5)
                ],
            )
        )
        assert added.added == 5 and added.last_seq == 5

        r = stub.CheckAndAdd(
            pb.CheckAndAddRequest(code=SOURCES[2], id="g0", namespace="run-1", consult=["corpus"])
        )
        assert not r.novel and not r.added and r.nearest_id == "s2"
        assert r.nearest_namespace == "corpus" and r.max_similarity == pytest.approx(1.0)
        r = stub.CheckAndAdd(
            pb.CheckAndAddRequest(code=SOURCES[10], id="g1", namespace="run-1", consult=["corpus"])
        )
        assert r.novel and r.added and r.seq == 1

        batch = stub.BatchCheckAndAdd(
            pb.BatchCheckAndAddRequest(
                namespace="run-1",
                consult=["corpus"],
                items=[
                    pb.BatchCheckAndAddRequest.Item(id="g2", code=SOURCES[11]),
                    pb.BatchCheckAndAddRequest.Item(id="g3", code=SOURCES[11] + "\n# again"),
                    pb.BatchCheckAndAddRequest.Item(id="g4", code=SOURCES[12]),
                ],
            )
        )
        assert [x.added for x in batch.results] == [True, False, True]
        assert batch.results[1].nearest_id == "g2"

        check = stub.Check(pb.CheckRequest(code=SOURCES[12], namespaces=["run-1", "corpus"]))
        assert not check.novel and check.nearest_id == "g4"
        exhaustive = stub.Check(
            pb.CheckRequest(code=SOURCES[20], namespaces=["corpus"], exhaustive=True)
        )
        assert exhaustive.novel and 0 < exhaustive.max_similarity < 0.85
        bc = stub.BatchCheck(
            pb.BatchCheckRequest(
                items=[
                    pb.CheckRequest(code=SOURCES[0], namespaces=["corpus"]),
                    pb.CheckRequest(code=SOURCES[21], namespaces=["corpus"]),
                ]
            )
        )
        assert [x.novel for x in bc.results] == [False, True]

        removed = stub.Remove(pb.RemoveRequest(namespace="run-1", ids=["g4", "nope"]))
        assert removed.removed == 1 and list(removed.not_found) == ["nope"]

        stats = stub.Stats(pb.StatsRequest())
        assert stats.total_entries == 5 + 2
        assert stats.adds == 5 + 3 and stats.rejected_duplicates == 2
        assert [n.name for n in stub.ListNamespaces(pb.ListNamespacesRequest()).namespaces] == [
            "corpus",
            "run-1",
        ]
        got = stub.GetNamespace(pb.GetNamespaceRequest(name="run-1"))
        assert got.entries == 2 and got.last_seq == 4

        snap = stub.Snapshot(pb.SnapshotRequest(namespaces=["run-1"]))
        assert snap.namespaces[0].snapshot_seq == 4

        fp = stub.Fingerprint(pb.FingerprintRequest(code="x = nn.Conv2d(3, 8, 3)  # c"))
        assert list(fp.tokens)[:2] != ["x", "="] and "Conv2d" in fp.tokens
        raw = stub.Fingerprint(
            pb.FingerprintRequest(
                code="x = nn.Conv2d(3, 8, 3)", params=pb.NamespaceParams(mode=pb.TOKEN_MODE_RAW)
            )
        )
        assert raw.tokens[0] == "x"

        deleted = stub.DeleteNamespace(pb.DeleteNamespaceRequest(name="run-1"))
        assert deleted.removed_entries == 2
        expect_error(
            grpc.StatusCode.NOT_FOUND,
            "run-1",
            stub.GetNamespace,
            pb.GetNamespaceRequest(name="run-1"),
        )


def test_health_and_reflection(server: Server) -> None:
    with grpc.insecure_channel(server.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "nasloop.v1.Novelty"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"nasloop.v1.Novelty", "grpc.health.v1.Health"} <= services
        from google.protobuf.descriptor_pool import DescriptorPool

        novelty = DescriptorPool(db).FindServiceByName("nasloop.v1.Novelty")
        assert {"CheckAndAdd", "BatchCheckAndAdd", "Stats", "Remove", "Snapshot"} <= {
            m.name for m in novelty.methods
        }


def test_bad_inputs_and_the_service_keeps_serving(server: Server) -> None:
    ch, stub = stub_for(server)
    with ch:
        stub.CreateNamespace(pb.CreateNamespaceRequest(name="run"))
        stub.CreateNamespace(
            pb.CreateNamespaceRequest(name="raw", params=pb.NamespaceParams(mode=pb.TOKEN_MODE_RAW))
        )
        invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        cases = [
            (
                invalid,
                "empty",
                stub.CheckAndAdd,
                pb.CheckAndAddRequest(code="", id="a", namespace="run"),
            ),
            (
                invalid,
                "limit",
                stub.CheckAndAdd,
                pb.CheckAndAddRequest(code="x = 1\n" * 50_000, id="a", namespace="run"),
            ),
            (
                not_found,
                "unknown namespace 'nope'",
                stub.CheckAndAdd,
                pb.CheckAndAddRequest(code=SOURCES[0], id="a", namespace="nope"),
            ),
            (
                not_found,
                "unknown namespace",
                stub.Check,
                pb.CheckRequest(code=SOURCES[0], namespaces=["run", "ghost"]),
            ),
            (
                invalid,
                "mismatched parameters",
                stub.Check,
                pb.CheckRequest(code=SOURCES[0], namespaces=["run", "raw"]),
            ),
            (
                invalid,
                "exists with parameters",
                stub.CreateNamespace,
                pb.CreateNamespaceRequest(name="run", params=pb.NamespaceParams(num_perm=64)),
            ),
            (
                invalid,
                "invalid namespace parameters",
                stub.CreateNamespace,
                pb.CreateNamespaceRequest(name="x", params=pb.NamespaceParams(threshold=1.5)),
            ),
            (
                invalid,
                "invalid namespace name",
                stub.CreateNamespace,
                pb.CreateNamespaceRequest(name="../etc"),
            ),
            (invalid, "no namespace", stub.Check, pb.CheckRequest(code=SOURCES[0])),
            (
                invalid,
                "entry id",
                stub.CheckAndAdd,
                pb.CheckAndAddRequest(code=SOURCES[0], id="", namespace="run"),
            ),
        ]
        for code, fragment, fn, request in cases:
            expect_error(code, fragment, fn, request)

        # Bytes that are not UTF-8 in the `code` string field.
        raw_call = ch.unary_unary("/nasloop.v1.Novelty/Check")
        expect_error(invalid, "UTF-8", raw_call, b"\x0a\x03\xff\xfe\xfd\x12\x03run")

        stub.CheckAndAdd(pb.CheckAndAddRequest(code=SOURCES[0], id="a", namespace="run"))
        expect_error(
            grpc.StatusCode.ALREADY_EXISTS,
            "'a'",
            stub.CheckAndAdd,
            pb.CheckAndAddRequest(code=SOURCES[1], id="a", namespace="run"),
        )
        ok = stub.CheckAndAdd(pb.CheckAndAddRequest(code=SOURCES[1], id="b", namespace="run"))
        assert ok.added  # still serving, state intact
        assert stub.Stats(pb.StatsRequest()).total_entries == 2


def test_concurrent_clients_add_exactly_one_near_duplicate(server: Server) -> None:
    ch, stub = stub_for(server)
    with ch:
        stub.CreateNamespace(pb.CreateNamespaceRequest(name="run"))
        variants = [renamed(SOURCES[3], f"n{i}") for i in range(32)]
        barrier = threading.Barrier(len(variants))
        results: list[pb.CheckResult] = []

        def call(i: int) -> None:
            barrier.wait()
            results.append(
                stub.CheckAndAdd(
                    pb.CheckAndAddRequest(code=variants[i], id=f"v{i}", namespace="run")
                )
            )

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(variants))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.added for r in results) == 1
        assert stub.GetNamespace(pb.GetNamespaceRequest(name="run")).entries == 1


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_restores_everything_acknowledged(s3_env, tmp_path, how: str) -> None:
    log = tmp_path / "server.log"
    with novelty_server(s3_env, log) as first:
        ch, stub = stub_for(first)
        with ch:
            stub.CreateNamespace(
                pb.CreateNamespaceRequest(
                    name="run", params=pb.NamespaceParams(shingle_size=5, threshold=0.8)
                )
            )
            acked = [
                stub.CheckAndAdd(pb.CheckAndAddRequest(code=c, id=f"e{i}", namespace="run"))
                for i, c in enumerate(SOURCES[:12])
            ]
            stub.Remove(pb.RemoveRequest(namespace="run", ids=["e0"]))
        kept = {f"e{i}" for i, r in enumerate(acked) if r.added} - {"e0"}
        if how == "sigterm":
            assert first.stop(signal.SIGTERM) == 0, log.read_text()[-3000:]
        else:
            first.stop(signal.SIGKILL)  # no chance to snapshot: the journal must suffice

    with novelty_server(s3_env, log) as second:
        ch, stub = stub_for(second)
        with ch:
            info = stub.GetNamespace(pb.GetNamespaceRequest(name="run"))
            assert info.params.shingle_size == 5 and info.params.threshold == pytest.approx(0.8)
            assert info.entries == len(kept)
            for i, code in enumerate(SOURCES[:12]):
                r = stub.Check(pb.CheckRequest(code=code, namespaces=["run"]))
                if f"e{i}" in kept:
                    assert not r.novel and r.nearest_id == f"e{i}"
            removed = stub.Check(pb.CheckRequest(code=SOURCES[0], namespaces=["run"]))
            assert removed.nearest_id != "e0"
            again = stub.CheckAndAdd(
                pb.CheckAndAddRequest(code=SOURCES[25], id="after", namespace="run")
            )
            assert again.added and again.seq == info.last_seq + 1
        assert second.stop() == 0
