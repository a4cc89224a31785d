"""The seed corpus into the store, and from the store into the novelty service (real gRPC)."""

from __future__ import annotations

from nasloop.corpus.build import count_parameters, seed_corpus, seed_novelty
from nasloop.corpus.records import load_corpus, save_corpus
from nasloop.rpc import connect
from nasloop.store import S3Store
from nasloop.v1 import novelty_pb2 as pb
from nasloop.v1 import novelty_pb2_grpc as pb_grpc


def test_seed_corpus_round_trips_and_seeds_the_novelty_index(s3_store: S3Store, server) -> None:  # type: ignore[no-untyped-def]
    records = seed_corpus(40, seed=3)
    assert len({r.fingerprint for r in records}) == 40
    assert all(r.source == "seed" and r.parameter_count > 0 for r in records)
    save_corpus(s3_store, "seed", records)
    loaded = load_corpus(s3_store, "seed")
    assert loaded == records

    assert seed_novelty(loaded, server.address, "corpus") == 40
    assert seed_novelty(loaded, server.address, "corpus") == 0  # re-seeding adds nothing
    with connect(server.address) as ch:
        stub = pb_grpc.NoveltyStub(ch)
        verdict = stub.Check(pb.CheckRequest(code=records[5].code, namespaces=["corpus"]))
        assert not verdict.novel and verdict.nearest_id == records[5].id
        assert stub.GetNamespace(pb.GetNamespaceRequest(name="corpus")).entries == 40


def test_count_parameters_refuses_nothing_it_cannot_build() -> None:
    assert count_parameters("def broken(:") == 0
    assert count_parameters("x = 1") == 0
