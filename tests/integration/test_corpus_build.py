"""The seed corpus into the store, and from the store into the novelty service (real gRPC)."""

from __future__ import annotations

import sqlite3

from nasloop.corpus.build import count_parameters, seed_corpus, seed_novelty
from nasloop.corpus.records import load_corpus, save_corpus
from nasloop.rpc import connect
from nasloop.store import S3Store
from nasloop.v1 import novelty_pb2 as pb
from nasloop.v1 import novelty_pb2_grpc as pb_grpc
from services.cli import main


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


def test_cli_corpus_commands(s3_env, server, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`nasloop corpus seed | import-lemur | seed-novelty` against S3 and the novelty service."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    assert main(["corpus", "seed", "--count", "12", "--seed", "4"]) == 0
    assert "corpus seed: 12 seed networks" in capsys.readouterr().out

    db = tmp_path / "ab.nn.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE nn (name TEXT, code TEXT)")
    conn.execute("CREATE TABLE stat (nn TEXT, dataset TEXT, epoch INTEGER, accuracy REAL)")
    codes = [r.code for r in seed_corpus(2, seed=9)]
    conn.executemany("INSERT INTO nn VALUES (?, ?)", [("A", codes[0]), ("B", codes[1])])
    conn.executemany(
        "INSERT INTO stat VALUES (?, ?, ?, ?)",
        [("A", "CIFAR-10", 1, 0.41), ("A", "CIFAR-10", 1, 0.45), ("B", "mnist", 1, 0.9)],
    )
    conn.commit()
    conn.close()
    assert main(["corpus", "import-lemur", str(db), "--dataset", "cifar10"]) == 0
    assert "corpus lemur: 1 LEMUR records" in capsys.readouterr().out

    assert main(["corpus", "seed-novelty", "--novelty", server.address]) == 0
    assert "added 12 of 12" in capsys.readouterr().out
    argv = ["corpus", "seed-novelty", "--name", "lemur", "--novelty", server.address]
    assert main(argv) == 0
    assert "added 1 of 1" in capsys.readouterr().out
    with connect(server.address) as ch:
        stub = pb_grpc.NoveltyStub(ch)
        assert stub.GetNamespace(pb.GetNamespaceRequest(name="corpus")).entries == 13

    # Bad inputs: one line on stderr and a non-zero exit, no traceback.
    assert main(["corpus", "seed-novelty", "--name", "absent", "--novelty", server.address]) == 2
    assert "no corpus 'absent'" in capsys.readouterr().err
    assert main(["corpus", "import-lemur", str(tmp_path / "nothing.db")]) == 2
    assert capsys.readouterr().err.startswith("nasloop: ")
    bad = ["corpus", "seed-novelty", "--namespace", "Bad Name!", "--novelty", server.address]
    assert main(bad) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
