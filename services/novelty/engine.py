"""The novelty engine: namespaces of MinHash indexes with atomic, durable check-and-add.

Plain Python, no gRPC: the servicer translates messages, this module decides. Errors are
``nasloop.rpc.errors`` exceptions carrying the status the caller should see.

Concurrency: fingerprints are computed outside the lock, in a pool of worker processes
(``fingerprint_workers``; tokenising is pure Python and would otherwise hold the GIL that the
gRPC server needs); every read and change of an index happens under one engine lock, so a
check and the add that follows it are atomic and two concurrent near-duplicates can never both
be added. Durability: see ``committer.py``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from nasloop.config import NoveltyConfig
from nasloop.fingerprint import TokenMode, minhash, shingles, tokens
from nasloop.rpc.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from nasloop.store import ObjectStore, StoreError
from services.novelty.committer import Committer
from services.novelty.index import IndexParams, MinHashIndex
from services.novelty.persistence import NamespaceStore, decode_vector, encode_vector
from services.novelty.workers import FingerprintPool, WorkerDied

log = logging.getLogger("nasloop.novelty")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_ID_LEN = 256


@dataclass
class Namespace:
    name: str
    params: IndexParams
    index: MinHashIndex
    store: NamespaceStore
    seq: int = 0  # last sequence number assigned to an op
    snapshot_seq: int = 0
    ops_since_snapshot: int = 0
    last_snapshot: float = field(default_factory=time.monotonic)
    deleted: bool = False
    failed_writes: int = 0  # journal writes that failed and were rolled back
    snapshot_lock: threading.Lock = field(default_factory=threading.Lock)

    def next_seq(self) -> int:
        self.seq += 1
        self.ops_since_snapshot += 1
        return self.seq


@dataclass(frozen=True)
class Verdict:
    id: str
    novel: bool
    added: bool
    max_similarity: float
    nearest_id: str
    nearest_namespace: str
    seq: int = 0


@dataclass
class Counters:
    checks: int = 0
    adds: int = 0
    rejected_duplicates: int = 0


class NoveltyEngine:
    def __init__(self, store: ObjectStore, cfg: NoveltyConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.counters = Counters()
        self._lock = threading.RLock()
        self._admin_lock = threading.Lock()
        self._namespaces: dict[str, Namespace] = {}
        self._committer = Committer(self._lock, on_failure=self._journal_failed)
        self._stop = threading.Event()
        self._snapshotter: threading.Thread | None = None
        self._pool: FingerprintPool | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Restore every namespace from the store, then start the background threads."""
        for name in NamespaceStore.list_names(self.store):
            self._namespaces[name] = self._restore(name)
        if self.cfg.fingerprint_workers:
            self._pool = FingerprintPool(self.cfg.fingerprint_workers)
        self._snapshotter = threading.Thread(
            target=self._snapshot_loop, name="novelty-snapshots", daemon=True
        )
        self._snapshotter.start()

    def close(self) -> None:
        """Make everything pending durable and snapshot what changed since the last snapshot."""
        self._stop.set()
        if self._snapshotter is not None:
            self._snapshotter.join()
        self._committer.flush()
        if self._pool is not None:
            self._pool.close()
        for ns in list(self._namespaces.values()):
            if ns.ops_since_snapshot:
                self._snapshot(ns)

    def _restore(self, name: str) -> Namespace:
        started = time.perf_counter()
        nstore = NamespaceStore(self.store, name)
        restored = nstore.load()
        params = IndexParams.from_dict(restored.params)
        if restored.matrix is not None:
            index = MinHashIndex.restore(params, restored.ids, restored.matrix)
        else:
            index = MinHashIndex(params)
        for op in restored.ops:
            if op["op"] == "add":
                if op["id"] not in index:
                    index.add(op["id"], decode_vector(op["hv"]))
            elif op["op"] == "remove":
                index.remove(op["id"])
        last = restored.ops[-1]["seq"] if restored.ops else restored.snapshot_seq
        ns = Namespace(
            name,
            params,
            index,
            nstore,
            seq=last,
            snapshot_seq=restored.snapshot_seq,
            ops_since_snapshot=len(restored.ops),
        )
        log.info(
            "restored namespace",
            extra={
                "namespace": name,
                "entries": len(index),
                "snapshot_seq": restored.snapshot_seq,
                "replayed": len(restored.ops),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return ns

    # -- namespaces --------------------------------------------------------------------------
    def default_params(self) -> IndexParams:
        return IndexParams(
            mode=TokenMode.CANONICAL,
            shingle_size=self.cfg.shingle_size,
            num_perm=self.cfg.num_perm,
            threshold=self.cfg.threshold,
        )

    def create_namespace(self, name: str, params: IndexParams | None = None) -> Namespace:
        if not NAME_RE.match(name or ""):
            raise InvalidArgument(
                f"invalid namespace name {name!r}: use [a-z0-9][a-z0-9._-]{{0,62}}"
            )
        params = params or self.default_params()
        # Creations and deletions take turns; their store I/O runs outside the engine lock so
        # that checks on other namespaces never wait for it.
        with self._admin_lock:
            with self._lock:
                existing = self._namespaces.get(name)
            if existing is not None:
                if existing.params != params:
                    raise InvalidArgument(
                        f"namespace {name!r} exists with parameters {existing.params.to_dict()}, "
                        f"not {params.to_dict()}"
                    )
                return existing
            ns = Namespace(name, params, MinHashIndex(params), NamespaceStore(self.store, name))
            try:
                ns.store.delete()  # leftovers of an interrupted delete must not come back
                ns.store.write_meta(params.to_dict())
            except StoreError as e:
                raise Unavailable(f"cannot persist namespace {name!r}: {e}") from e
            with self._lock:
                self._namespaces[name] = ns
            return ns

    def namespace(self, name: str) -> Namespace:
        ns = self._namespaces.get(name)
        if ns is None:
            raise NotFound(f"unknown namespace {name!r}")
        return ns

    def namespaces(self) -> list[Namespace]:
        with self._lock:
            return sorted(self._namespaces.values(), key=lambda n: n.name)

    def delete_namespace(self, name: str) -> int:
        """Drop a namespace. It is gone once its namespace.json is; leftovers of a delete that
        failed after that are wiped when the name is created again, and ignored at start."""
        with self._admin_lock:
            with self._lock:
                ns = self.namespace(name)
                del self._namespaces[name]
                ns.deleted = True  # callers that resolved it before now get NOT_FOUND
            self._committer.flush()  # no journal write of this namespace may land after this
            with ns.snapshot_lock:
                try:
                    ns.store.delete_meta()
                except StoreError as e:
                    with self._lock:  # nothing was removed: it is still there
                        ns.deleted = False
                        self._namespaces[name] = ns
                    raise Unavailable(f"cannot delete namespace {name!r}: {e}") from e
                try:
                    ns.store.delete()
                except StoreError:
                    log.warning(
                        "leftovers of deleted namespace %s stay until it is re-created",
                        name,
                        exc_info=True,
                    )
            return len(ns.index)

    # -- fingerprints ------------------------------------------------------------------------
    def _validate_code(self, code: str, where: str = "") -> None:
        if not code or not code.strip():
            raise InvalidArgument(f"{where}code is empty")
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.cfg.max_code_bytes:
            raise InvalidArgument(
                f"{where}code is {size} bytes; the limit is {self.cfg.max_code_bytes}"
            )

    def fingerprint(self, code: str, params: IndexParams) -> np.ndarray:
        return self.fingerprints([code], params)[0]

    def fingerprints(self, codes: Sequence[str], params: IndexParams) -> list[np.ndarray]:
        """Fingerprints of ``codes``, by the worker processes when there are any."""
        for position, code in enumerate(codes):
            self._validate_code(code, _item(position, len(codes)))
        out = []
        for position, code in enumerate(codes):
            try:
                out.append(self._minhash(code, params))
            except ValueError as e:
                where = _item(position, len(codes))
                raise InvalidArgument(f"{where}cannot fingerprint code: {e}") from None
        return out

    def _minhash(self, code: str, params: IndexParams) -> np.ndarray:
        args = (code, params.mode, params.shingle_size, params.num_perm)
        if self._pool is not None:
            try:
                return self._pool.minhash(*args)
            except WorkerDied:
                log.warning("fingerprint computed in the request thread after a worker died")
        return minhash(*args)

    def tokens(self, code: str, params: IndexParams) -> tuple[list[str], int]:
        self._validate_code(code)
        toks = tokens(code, params.mode)
        return toks, len(shingles(toks, params.shingle_size))

    def _resolve(self, names: Iterable[str]) -> list[Namespace]:
        out: list[Namespace] = []
        for name in dict.fromkeys(names):  # de-duplicated, order kept
            out.append(self.namespace(name))
        if not out:
            raise InvalidArgument("no namespace given")
        first = out[0]
        for ns in out[1:]:
            if not first.params.same_fingerprint(ns.params):
                raise InvalidArgument(
                    f"namespaces {first.name!r} and {ns.name!r} have mismatched parameters "
                    f"({first.params.to_dict()} vs {ns.params.to_dict()}); they cannot be "
                    "compared"
                )
        return out

    def _validate_id(self, entry_id: str) -> None:
        if not entry_id or len(entry_id) > MAX_ID_LEN or not entry_id.isprintable():
            raise InvalidArgument(
                f"entry id must be 1..{MAX_ID_LEN} printable characters, got {entry_id!r:.80}"
            )

    # -- queries -----------------------------------------------------------------------------
    def _nearest(
        self, hv: np.ndarray, namespaces: Sequence[Namespace], exhaustive: bool
    ) -> tuple[float, str, str]:
        best = (0.0, "", "")
        for ns in namespaces:
            found, sim = (ns.index.nearest_exhaustive if exhaustive else ns.index.nearest)(hv)
            if found is not None and sim > best[0]:
                best = (sim, found, ns.name)
        return best

    def check(self, code: str, names: Sequence[str], exhaustive: bool = False) -> Verdict:
        return self.batch_check([(code, names, exhaustive)])[0]

    def batch_check(self, items: Sequence[tuple[str, Sequence[str], bool]]) -> list[Verdict]:
        """Read-only checks of (code, namespaces, exhaustive) items, in order."""
        self._check_batch_size(items)
        resolved = [self._resolve(names) for _, names, _ in items]
        vectors = []
        for position, ((code, _, _), namespaces) in enumerate(zip(items, resolved, strict=True)):
            try:
                vectors.append(self.fingerprint(code, namespaces[0].params))
            except InvalidArgument as e:
                raise InvalidArgument(_item(position, len(items)) + e.message) from None
        verdicts = []
        with self._lock:
            for (_, _, exhaustive), namespaces, hv in zip(items, resolved, vectors, strict=True):
                self._check_live(namespaces)
                sim, nearest, where = self._nearest(hv, namespaces, exhaustive)
                self.counters.checks += 1
                novel = namespaces[0].index.is_novel(sim)
                verdicts.append(Verdict("", novel, False, sim, nearest, where))
        return verdicts

    def check_and_add(
        self, code: str, entry_id: str, name: str, consult: Sequence[str] = ()
    ) -> Verdict:
        return self.batch_check_and_add([(entry_id, code)], name, consult)[0]

    def batch_check_and_add(
        self, items: Sequence[tuple[str, str]], name: str, consult: Sequence[str] = ()
    ) -> list[Verdict]:
        """Check each (id, code) in order and add the novel ones to ``name``, durably."""
        namespaces = self._resolve([name, *consult])
        target = namespaces[0]
        vectors = self._prepare(items, target)
        verdicts: list[Verdict] = []
        futures: list[Future] = []
        with self._lock:
            self._check_live(namespaces)
            replays = self._replays(target, items, vectors)
            for (entry_id, _), hv in zip(items, vectors, strict=True):
                if entry_id in replays:  # a retry of an add that was acknowledged
                    verdicts.append(Verdict(entry_id, True, True, 0.0, "", ""))
                    continue
                sim, nearest, where = self._nearest(hv, namespaces, exhaustive=False)
                self.counters.checks += 1
                novel = target.index.is_novel(sim)
                seq = 0
                if novel:
                    seq = self._add_locked(target, entry_id, hv, futures)
                else:
                    self.counters.rejected_duplicates += 1
                verdicts.append(Verdict(entry_id, novel, novel, sim, nearest, where, seq))
        self._wait_durable(futures, target)
        return verdicts

    def add(
        self, items: Sequence[tuple[str, str]], name: str, skip_existing: bool = False
    ) -> tuple[int, int]:
        """Add every (id, code) unconditionally (corpus seeding). Returns (added, last seq).

        An id already present is ALREADY_EXISTS (nothing added), or skipped with
        ``skip_existing`` (re-seeding a corpus)."""
        target = self.namespace(name)
        vectors = self._prepare(items, target)
        futures: list[Future] = []
        with self._lock:
            self._check_live([target])
            if not skip_existing:
                self._check_not_present(target, [i for i, _ in items])
            for (entry_id, _), hv in zip(items, vectors, strict=True):
                if entry_id not in target.index:
                    self._add_locked(target, entry_id, hv, futures)
            last = target.seq
        self._wait_durable(futures, target)
        return len(futures), last

    def remove(self, name: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        target = self.namespace(name)
        futures: list[Future] = []
        not_found: list[str] = []
        with self._lock:
            self._check_live([target])
            for entry_id in ids:
                hv = target.index.vector(entry_id) if entry_id in target.index else None
                if hv is None:
                    not_found.append(entry_id)
                    continue
                target.index.remove(entry_id)
                op = {"seq": target.next_seq(), "op": "remove", "id": entry_id}
                futures.append(self._submit(target, op, partial(target.index.add, entry_id, hv)))
        self._wait_durable(futures, target)
        return len(futures), not_found

    # -- internals ---------------------------------------------------------------------------
    def _prepare(self, items: Sequence[tuple[str, str]], target: Namespace) -> list[np.ndarray]:
        if not items:
            raise InvalidArgument("no items given")
        self._check_batch_size(items)
        seen: set[str] = set()
        for entry_id, _ in items:
            self._validate_id(entry_id)
            if entry_id in seen:
                raise InvalidArgument(f"id {entry_id!r} appears twice in the request")
            seen.add(entry_id)
        return self.fingerprints([code for _, code in items], target.params)

    def _check_batch_size(self, items: Sequence[object]) -> None:
        if len(items) > self.cfg.max_batch:
            raise InvalidArgument(f"{len(items)} items; the limit is {self.cfg.max_batch}")

    def _check_live(self, namespaces: Sequence[Namespace]) -> None:
        for ns in namespaces:
            if ns.deleted:
                raise NotFound(f"namespace {ns.name!r} was deleted")

    def _replays(
        self, target: Namespace, items: Sequence[tuple[str, str]], vectors: Sequence[np.ndarray]
    ) -> set[str]:
        """Ids already present with the very same fingerprint: a client retrying after a lost
        reply. The same id with other code is ALREADY_EXISTS."""
        replays = set()
        for (entry_id, _), hv in zip(items, vectors, strict=True):
            if entry_id in target.index:
                if not np.array_equal(target.index.vector(entry_id), hv):
                    raise AlreadyExists(
                        f"id {entry_id!r} is already in namespace {target.name!r} with other code"
                    )
                replays.add(entry_id)
        return replays

    def _check_not_present(self, target: Namespace, ids: Sequence[str]) -> None:
        for entry_id in ids:
            if entry_id in target.index:
                raise AlreadyExists(f"id {entry_id!r} is already in namespace {target.name!r}")

    def _add_locked(
        self, target: Namespace, entry_id: str, hv: np.ndarray, futures: list[Future]
    ) -> int:
        target.index.add(entry_id, hv)
        seq = target.next_seq()
        self.counters.adds += 1
        op = {"seq": seq, "op": "add", "id": entry_id, "hv": encode_vector(hv)}
        futures.append(self._submit(target, op, lambda: target.index.remove(entry_id)))
        return seq

    def _submit(self, target: Namespace, op: dict, undo: Callable[[], object]) -> Future:
        return self._committer.submit(target.store, op, undo)

    def _wait_durable(self, futures: list[Future], target: Namespace) -> None:
        self._committer.wait(futures)
        errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            raise Unavailable(
                f"could not persist {len(failed)} change(s) to namespace {target.name!r} "
                f"({failed[0]}); they were not applied"
            )

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self, names: Sequence[str] = ()) -> list[Namespace]:
        targets = [self.namespace(n) for n in names] if names else self.namespaces()
        for ns in targets:
            try:
                self._snapshot(ns)
            except StoreError as e:
                raise Unavailable(f"snapshot of {ns.name!r} failed: {e}") from e
        return targets

    def _journal_failed(self, journal: object) -> None:
        for ns in self._namespaces.values():
            if ns.store is journal:
                ns.failed_writes += 1

    def _snapshot(self, ns: Namespace) -> None:
        with ns.snapshot_lock:
            with self._lock:
                if ns.deleted:
                    return
                seq, covered, failed = ns.seq, ns.ops_since_snapshot, ns.failed_writes
                ids, matrix = ns.index.export()
            # Every op in the export must be durable before the snapshot may stand for it.
            self._committer.flush()
            if ns.failed_writes != failed:
                log.warning(
                    "snapshot skipped: a write it holds was rolled back",
                    extra={"namespace": ns.name, "seq": seq},
                )
                return
            started = time.perf_counter()
            ns.store.write_snapshot(seq, ids, matrix)
            ns.store.compact(seq)
            with self._lock:
                ns.snapshot_seq = seq
                ns.ops_since_snapshot -= covered
                ns.last_snapshot = time.monotonic()
            log.info(
                "snapshot",
                extra={
                    "namespace": ns.name,
                    "seq": seq,
                    "entries": len(ids),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )

    def _snapshot_loop(self) -> None:
        tick = min(1.0, self.cfg.snapshot_interval_s)
        while not self._stop.wait(tick):
            now = time.monotonic()
            for ns in self.namespaces():
                due = ns.ops_since_snapshot >= self.cfg.snapshot_every_ops or (
                    ns.ops_since_snapshot > 0
                    and now - ns.last_snapshot >= self.cfg.snapshot_interval_s
                )
                if due:
                    try:
                        self._snapshot(ns)
                    except Exception:
                        log.exception("periodic snapshot of %s failed", ns.name)


def _item(position: int, count: int) -> str:
    """The prefix that names the offending item of a batch in an error message."""
    return f"item {position}: " if count > 1 else ""
