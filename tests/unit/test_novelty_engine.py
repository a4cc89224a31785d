"""The novelty engine without a network: namespaces, verdicts, atomicity, durability."""

from __future__ import annotations

import threading

import pytest
from cnn_sources import generate_sources, renamed

from nasloop.config import NoveltyConfig, load_config
from nasloop.fingerprint import TokenMode
from nasloop.rpc.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from nasloop.store import LocalStore, ObjectStore, StoreError
from services.novelty.engine import NoveltyEngine
from services.novelty.index import IndexParams
from services.novelty.server import build

SOURCES = list(generate_sources(40, seed=7))


IN_THREAD = NoveltyConfig(fingerprint_workers=0)


@pytest.fixture
def engine(local_store: LocalStore):
    eng = NoveltyEngine(local_store, IN_THREAD)
    eng.open()
    yield eng
    eng.close()


def reopen(store: ObjectStore, cfg: NoveltyConfig | None = None) -> NoveltyEngine:
    eng = NoveltyEngine(store, cfg or IN_THREAD)
    eng.open()
    return eng


def test_namespace_lifecycle(engine: NoveltyEngine) -> None:
    ns = engine.create_namespace("run-1")
    assert ns.params == engine.default_params()
    assert engine.create_namespace("run-1") is ns  # same parameters: no-op
    other = IndexParams(mode=TokenMode.RAW)
    with pytest.raises(InvalidArgument, match="exists with parameters"):
        engine.create_namespace("run-1", other)
    for bad in ("", "Upper", "-lead", "a" * 64, "x/y"):
        with pytest.raises(InvalidArgument, match="invalid namespace name"):
            engine.create_namespace(bad)
    with pytest.raises(NotFound, match="unknown namespace 'nope'"):
        engine.namespace("nope")
    engine.check_and_add(SOURCES[0], "a", "run-1")
    assert engine.delete_namespace("run-1") == 1
    assert engine.store.list("novelty/run-1/") == []


def test_verdicts(engine: NoveltyEngine) -> None:
    engine.create_namespace("run")
    first = engine.check_and_add(SOURCES[0], "a", "run")
    assert first.novel and first.added and first.seq == 1
    copy = engine.check_and_add(renamed(SOURCES[0]), "b", "run")
    assert not copy.novel and not copy.added
    assert copy.nearest_id == "a" and copy.nearest_namespace == "run"
    assert copy.max_similarity >= 0.85
    other = engine.check_and_add(SOURCES[1], "c", "run")
    assert other.novel and other.added
    read_only = engine.check(renamed(SOURCES[1]), ["run"])
    assert not read_only.novel and read_only.nearest_id == "c"
    assert len(engine.namespace("run").index) == 2
    with pytest.raises(AlreadyExists, match="other code"):
        engine.check_and_add(SOURCES[2], "a", "run")
    # A retry of an acknowledged add (lost reply) is answered, not refused, and adds nothing.
    replay = engine.check_and_add(SOURCES[0], "a", "run")
    assert replay.added and replay.novel and replay.seq == 0
    assert len(engine.namespace("run").index) == 2


def test_consulting_the_corpus(engine: NoveltyEngine) -> None:
    engine.create_namespace("corpus")
    engine.create_namespace("run")
    engine.add([("seed-0", SOURCES[0]), ("seed-1", SOURCES[1])], "corpus")
    v = engine.check_and_add(renamed(SOURCES[1]), "g1", "run", consult=["corpus"])
    assert not v.novel and v.nearest_namespace == "corpus" and v.nearest_id == "seed-1"
    assert len(engine.namespace("run").index) == 0
    raw = engine.create_namespace("raw", IndexParams(mode=TokenMode.RAW))
    assert raw.params.mode is TokenMode.RAW
    with pytest.raises(InvalidArgument, match="mismatched parameters"):
        engine.check(SOURCES[3], ["run", "raw"])


def test_batch_is_ordered_and_validated_first(engine: NoveltyEngine) -> None:
    engine.create_namespace("run")
    verdicts = engine.batch_check_and_add(
        [("a", SOURCES[0]), ("b", renamed(SOURCES[0])), ("c", SOURCES[1])], "run"
    )
    assert [v.added for v in verdicts] == [True, False, True]
    assert verdicts[1].nearest_id == "a"
    # One bad item refuses the whole batch before anything changes.
    with pytest.raises(InvalidArgument, match="item 1"):
        engine.batch_check_and_add([("d", SOURCES[2]), ("e", "   ")], "run")
    with pytest.raises(InvalidArgument, match="twice"):
        engine.batch_check_and_add([("f", SOURCES[3]), ("f", SOURCES[4])], "run")
    assert "d" not in engine.namespace("run").index


@pytest.mark.parametrize(
    ("code", "message"),
    [("", "empty"), (" \n\t", "empty"), ("x" * 300_000, "limit")],
)
def test_bad_code(engine: NoveltyEngine, code: str, message: str) -> None:
    engine.create_namespace("run")
    with pytest.raises(InvalidArgument, match=message):
        engine.check_and_add(code, "a", "run")


def test_bad_ids(engine: NoveltyEngine) -> None:
    engine.create_namespace("run")
    for bad in ("", "x" * 300, "tab\there"):
        with pytest.raises(InvalidArgument, match="entry id"):
            engine.check_and_add(SOURCES[0], bad, "run")


def test_concurrent_near_duplicates_keep_exactly_one(engine: NoveltyEngine) -> None:
    engine.create_namespace("run")
    variants = [renamed(SOURCES[5], f"v{i}") for i in range(24)]
    barrier = threading.Barrier(len(variants))
    results = []

    def worker(i: int) -> None:
        barrier.wait()
        results.append(engine.check_and_add(variants[i], f"id-{i}", "run"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(variants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(v.added for v in results) == 1
    assert len(engine.namespace("run").index) == 1


def test_remove(engine: NoveltyEngine) -> None:
    engine.create_namespace("run")
    engine.add([("a", SOURCES[0]), ("b", SOURCES[1])], "run")
    removed, missing = engine.remove("run", ["a", "zzz"])
    assert (removed, missing) == (1, ["zzz"])
    assert engine.check_and_add(renamed(SOURCES[0]), "a2", "run").added


def test_restart_replays_the_journal_after_a_crash(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    for i, code in enumerate(SOURCES[:10]):
        eng.check_and_add(code, f"id-{i}", "run")
    eng.remove("run", ["id-3"])
    # No close(): a crash. Only the journal holds the state.
    assert local_store.list("novelty/run/snapshot/") == []
    again = reopen(local_store)
    ns = again.namespace("run")
    assert len(ns.index) == 9 and "id-3" not in ns.index and ns.seq == 11
    assert not again.check(renamed(SOURCES[4]), ["run"]).novel
    assert again.check_and_add(SOURCES[3], "id-3b", "run").seq == 12
    again.close()


def test_snapshot_compacts_and_restores(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    eng.add([(f"id-{i}", c) for i, c in enumerate(SOURCES[:20])], "run")
    eng.snapshot(["run"])
    assert local_store.list("novelty/run/journal/") == []
    eng.check_and_add(SOURCES[30], "late", "run")  # after the snapshot: journal only
    ns = eng.namespace("run")
    assert ns.snapshot_seq == 20 and ns.seq == 21
    again = reopen(local_store)  # crash after the snapshot
    restored = again.namespace("run")
    assert len(restored.index) == 21 and "late" in restored.index
    assert restored.snapshot_seq == 20
    again.close()  # clean stop: final snapshot, empty journal
    assert local_store.list("novelty/run/journal/") == []
    assert len(reopen(local_store).namespace("run").index) == 21


def test_incomplete_snapshot_is_ignored(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    eng.add([("a", SOURCES[0])], "run")
    # A snapshot whose manifest never landed (crash mid-write) must not be trusted.
    local_store.put_bytes("novelty/run/snapshot/000000000099/ids.json", b'["ghost"]')
    again = reopen(local_store)
    assert list(again.namespace("run").index.export()[0]) == ["a"]


class FailingJournal(LocalStore):
    """A local store whose journal writes fail: the engine must not acknowledge or keep them."""

    fail = True

    def put_bytes(self, key: str, data: bytes):  # type: ignore[override]
        if self.fail and "/journal/" in key:
            raise StoreError(f"injected failure writing {key}")
        return super().put_bytes(key, data)

    def append_bytes(self, key: str, data: bytes) -> None:
        if self.fail and "/journal/" in key:
            raise StoreError(f"injected failure appending to {key}")
        super().append_bytes(key, data)


def test_failed_journal_write_is_not_acknowledged(tmp_path) -> None:
    store = FailingJournal(tmp_path / "s")
    eng = reopen(store)
    eng.create_namespace("run")
    with pytest.raises(Unavailable, match="could not persist"):
        eng.check_and_add(SOURCES[0], "a", "run")
    assert "a" not in eng.namespace("run").index  # undone in memory
    store.fail = False
    assert eng.check_and_add(SOURCES[0], "a", "run").added  # and the service goes on
    eng.close()
    assert "a" in reopen(store).namespace("run").index


def test_recreated_namespace_starts_empty(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    eng.add([("a", SOURCES[0])], "run")
    eng.delete_namespace("run")
    # Leftovers of an interrupted delete (namespace.json gone, journal still there).
    local_store.put_bytes("novelty/gone/journal/000000000001-000000000001.json", b"[]")
    eng.create_namespace("run")
    eng.create_namespace("gone")
    assert local_store.list("novelty/gone/journal/") == []
    again = reopen(local_store)
    assert len(again.namespace("run").index) == 0
    assert again.check(SOURCES[0], ["run"]).novel


def test_calls_on_a_deleted_namespace_are_not_found(engine: NoveltyEngine) -> None:
    ns = engine.create_namespace("run")
    engine.delete_namespace("run")
    with pytest.raises(NotFound, match="was deleted"):
        engine._check_live([ns])
    with pytest.raises(NotFound):
        engine.check_and_add(SOURCES[0], "a", "run")


class ObjectOnlyStore(LocalStore):
    """A local store that cannot append, like S3: the journal is one object per write."""

    supports_append = False


@pytest.mark.parametrize("store_class", [LocalStore, ObjectOnlyStore])
def test_journal_layouts_survive_a_crash(tmp_path, store_class) -> None:
    store = store_class(tmp_path / "s")
    eng = reopen(store)
    eng.create_namespace("run")
    for i, code in enumerate(SOURCES[:6]):
        eng.check_and_add(code, f"id-{i}", "run")
    journal = store.list("novelty/run/journal/")
    suffix = ".log" if store.supports_append else ".json"
    assert journal and all(k.endswith(suffix) for k in journal)
    assert len(reopen(store).namespace("run").index) == 6  # crash: journal only
    eng.snapshot(["run"])
    eng.check_and_add(SOURCES[7], "late", "run")
    # The snapshot dropped the covered journal; only the write after it is left.
    assert len(store.list("novelty/run/journal/")) == 1
    assert len(reopen(store).namespace("run").index) == 7


def test_torn_journal_tail_is_ignored(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    eng.check_and_add(SOURCES[0], "a", "run")
    [segment] = local_store.list("novelty/run/journal/")
    local_store.append_bytes(segment, b'[{"seq": 2, "op": "add", "id": "b", "hv": "AA')  # crash
    again = reopen(local_store)
    assert list(again.namespace("run").index.export()[0]) == ["a"]
    assert again.check_and_add(SOURCES[1], "b", "run").seq == 2


def test_fingerprint_pool_matches_and_survives_a_dead_worker(local_store: LocalStore) -> None:
    eng = reopen(local_store, NoveltyConfig(fingerprint_workers=2))
    try:
        params = eng.default_params()
        pooled = eng.fingerprints(SOURCES[:8], params)
        for code, hv in zip(SOURCES[:8], pooled, strict=True):
            assert (hv == params.fingerprint(code)).all()
        with pytest.raises(InvalidArgument, match="item 1: code is empty"):
            eng.fingerprints([SOURCES[0], ""], params)
        eng.create_namespace("run")
        before = eng._pool.processes
        for process in before:
            process.kill()  # e.g. the OOM killer
            process.join()
        # Calls that meet a dead worker are still answered, and the workers are replaced.
        assert eng.check_and_add(SOURCES[0], "a", "run").added
        assert eng.check_and_add(renamed(SOURCES[0]), "b", "run").nearest_id == "a"
        after = eng._pool.processes
        assert len(after) == 2 and all(p.is_alive() for p in after)
        assert not set(after) & set(before)
    finally:
        eng.close()


def test_torn_first_write_of_a_segment_survives_two_restarts(local_store: LocalStore) -> None:
    eng = reopen(local_store)
    eng.create_namespace("run")
    eng.check_and_add(SOURCES[0], "a", "run")
    # A crash during the first write of the next segment: only a partial line, never acked.
    local_store.append_bytes(
        "novelty/run/journal/000000000002-0badc0de.log", b'[{"seq": 2, "op": "add", "id": "x'
    )
    again = reopen(local_store)
    assert again.check_and_add(SOURCES[1], "b", "run").seq == 2  # seq 2 is reused, not its file
    third = reopen(local_store)
    assert sorted(third.namespace("run").index.export()[0]) == ["a", "b"]


class FailingDeletes(LocalStore):
    fail_on = ""

    def delete(self, key: str) -> None:
        if self.fail_on and key.endswith(self.fail_on):
            raise StoreError(f"injected failure deleting {key}")
        super().delete(key)


def test_delete_namespace_failures(tmp_path) -> None:
    store = FailingDeletes(tmp_path / "s")
    eng = reopen(store)
    eng.create_namespace("run")
    eng.add([("a", SOURCES[0])], "run")
    store.fail_on = "namespace.json"  # nothing could be removed: the namespace stays, usable
    with pytest.raises(Unavailable, match="cannot delete"):
        eng.delete_namespace("run")
    assert eng.check_and_add(SOURCES[1], "b", "run").added
    store.fail_on = ".npy"  # namespace.json went, a later file did not: deleted all the same
    eng.snapshot(["run"])
    assert eng.delete_namespace("run") == 2
    assert "run" not in [ns.name for ns in reopen(store).namespaces()]
    store.fail_on = ""
    eng.create_namespace("run")  # leftovers are wiped, nothing comes back
    assert len(reopen(store).namespace("run").index) == 0


def test_snapshot_is_skipped_when_a_write_it_holds_is_rolled_back(engine) -> None:
    ns = engine.create_namespace("run")
    engine.add([("a", SOURCES[0])], "run")
    real_flush = engine._committer.flush

    def flush_with_a_failure() -> None:  # a write fails while the snapshot is being taken
        real_flush()
        ns.failed_writes += 1

    engine._committer.flush = flush_with_a_failure
    engine.snapshot(["run"])
    assert engine.store.list("novelty/run/snapshot/") == []
    engine._committer.flush = real_flush
    engine.snapshot(["run"])
    assert engine.store.list("novelty/run/snapshot/")


def test_add_skip_existing_and_batch_check(engine: NoveltyEngine) -> None:
    engine.create_namespace("corpus")
    assert engine.add([("a", SOURCES[0]), ("b", SOURCES[1])], "corpus") == (2, 2)
    with pytest.raises(AlreadyExists):
        engine.add([("b", SOURCES[1]), ("c", SOURCES[2])], "corpus")
    assert engine.add([("b", SOURCES[1]), ("c", SOURCES[2])], "corpus", skip_existing=True) == (
        1,
        3,
    )
    verdicts = engine.batch_check(
        [(renamed(SOURCES[2]), ["corpus"], False), (SOURCES[3], ["corpus"], True)]
    )
    assert [v.novel for v in verdicts] == [False, True] and verdicts[0].nearest_id == "c"
    with pytest.raises(InvalidArgument, match="item 1: code is empty"):
        engine.batch_check([(SOURCES[0], ["corpus"], False), ("", ["corpus"], False)])


@pytest.mark.parametrize(("threads", "expected"), [(0, 16), (6, 6)])
def test_handler_threads_size_the_novelty_server(tmp_path, threads: int, expected: int) -> None:
    env = {
        "NASLOOP_STORE__URL": f"file://{tmp_path}",
        "NASLOOP_SERVER__MAX_WORKERS": "16",
        "NASLOOP_NOVELTY__HANDLER_THREADS": str(threads),
    }
    host, engine = build(load_config(env=env), port=0)
    assert host.cfg.max_workers == expected
    engine.close()
