"""Novelty index benchmark (issue targets on the 2-core CI machine):

* in-process check-and-add p50 ≤ 2 ms at 100,000 entries (fingerprint + LSH + durable journal);
* LSH ≥ 50 times faster than brute force at 100,000 entries, with the same answers on a sample;
* ≥ 500 check-and-adds per second through gRPC from a concurrent client;
* snapshot + restore of 100,000 entries ≤ 10 s.

Usage: python benchmarks/novelty_bench.py [--entries 100000] [--queries 2000] [--s3]
[--only grpc] [--matrix-cache FILE]
Prints one line per figure; docs/benchmarks.md records the results. ``--only grpc`` runs just
the gRPC throughput (with ``--matrix-cache`` the index fingerprints are computed once and then
loaded, so a rerun starts in seconds).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from cnn_sources import generate_sources, renamed  # noqa: E402
from servers import novelty_server  # noqa: E402

from nasloop.config import NoveltyConfig  # noqa: E402
from nasloop.fingerprint import minhash  # noqa: E402
from nasloop.rpc import connect  # noqa: E402
from nasloop.store import LocalStore, ObjectStore  # noqa: E402
from nasloop.v1 import novelty_pb2 as pb  # noqa: E402
from nasloop.v1 import novelty_pb2_grpc as pb_grpc  # noqa: E402
from services.novelty.engine import NoveltyEngine  # noqa: E402
from services.novelty.index import IndexParams, MinHashIndex  # noqa: E402
from services.novelty.persistence import NamespaceStore  # noqa: E402

PARAMS = IndexParams()


def _fingerprint(code: str) -> np.ndarray:
    return minhash(code, PARAMS.mode, PARAMS.shingle_size, PARAMS.num_perm)


def report(name: str, value: float, unit: str, target: str = "") -> None:
    print(f"{name:<48} {value:>12.3f} {unit:<8} {target}", flush=True)


def perturb(code: str, i: int) -> str:
    """A renamed copy with a few lines deleted or repeated: near or just below the threshold."""
    lines = renamed(code, f"q{i}").splitlines()
    rng = np.random.default_rng(i)
    for _ in range(int(rng.integers(0, 4))):
        j = int(rng.integers(1, len(lines)))
        if rng.random() < 0.5:
            del lines[j]
        else:
            lines.insert(j, lines[j])
    return "\n".join(lines)


def lsh_vs_brute_force(index: MinHashIndex, indexed: list[str], fresh: list[str]) -> None:
    queries = [perturb(c, i) for i, c in enumerate(indexed[:250])] + fresh[:250]
    vectors = [_fingerprint(q) for q in queries]
    t0 = time.perf_counter()
    lsh = [index.nearest(v) for v in vectors]
    t_lsh = (time.perf_counter() - t0) / len(vectors)
    t0 = time.perf_counter()
    brute = [index.nearest_exhaustive(v) for v in vectors]
    t_brute = (time.perf_counter() - t0) / len(vectors)
    agree = sum(
        index.is_novel(a[1]) == index.is_novel(b[1]) for a, b in zip(lsh, brute, strict=True)
    )
    same_nearest = sum(
        a[0] == b[0] for a, b in zip(lsh, brute, strict=True) if not index.is_novel(b[1])
    )
    duplicates = sum(not index.is_novel(b[1]) for b in brute)
    report("query, LSH (mean)", t_lsh * 1e3, "ms")
    report("query, brute force (numpy, mean)", t_brute * 1e3, "ms")
    report("LSH speed-up over brute force", t_brute / t_lsh, "x", "target >= 50")
    report(
        "verdicts agreeing with brute force",
        100 * agree / len(vectors),
        "%",
        f"of {len(vectors)} queries",
    )
    report(
        "near-duplicates found with the same nearest id",
        100 * same_nearest / max(duplicates, 1),
        "%",
        f"of {duplicates}",
    )


def index_check_and_add(index: MinHashIndex, fresh: list[str]) -> None:
    """The core of a check-and-add without persistence: fingerprint, LSH check, insert."""
    times = []
    for i, code in enumerate(fresh):
        t0 = time.perf_counter()
        hv = _fingerprint(code)
        _, sim = index.nearest(hv)
        if index.is_novel(sim):
            index.add(f"core-{i}", hv)
        times.append(time.perf_counter() - t0)
    p = np.percentile(np.array(times) * 1e3, [50, 95, 99])
    report("check-and-add on the index (no journal), p50", p[0], "ms", "target <= 2")
    report("check-and-add on the index (no journal), p95", p[1], "ms")
    report("check-and-add on the index (no journal), p99", p[2], "ms")


def in_process_check_and_add(engine: NoveltyEngine, fresh: list[str], label: str) -> None:
    """Sequential NoveltyEngine.check_and_add: fingerprint, LSH check, add, durable journal."""
    times = []
    for i, code in enumerate(fresh):
        t0 = time.perf_counter()
        engine.check_and_add(code, f"{label}-{i}", "bench")
        times.append(time.perf_counter() - t0)
    fp = []
    for code in fresh[:500]:
        t0 = time.perf_counter()
        _fingerprint(code)
        fp.append(time.perf_counter() - t0)
    p = np.percentile(np.array(times) * 1e3, [50, 95, 99])
    report(f"check-and-add in process ({label}), p50", p[0], "ms", "target <= 2")
    report(f"check-and-add in process ({label}), p95", p[1], "ms")
    report(f"check-and-add in process ({label}), p99", p[2], "ms")
    report("  fingerprint alone (calling thread), p50", statistics.median(fp) * 1e3, "ms")


def _rate(threads: int, seconds: float, call: Callable[[], bool]) -> float:
    """Calls per second from ``threads`` threads for ``seconds`` (``call`` False: stop)."""
    done: list[int] = []
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        n = 0
        while time.perf_counter() < deadline and call():
            n += 1
        done.append(n)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def grpc_throughput(store_dir: Path, fresh: list[str], args: argparse.Namespace) -> None:
    threads, seconds, rounds = args.threads, args.seconds, args.rounds
    env = {
        "NASLOOP_STORE__URL": f"file://{store_dir}",
        "NASLOOP_SERVER__HOST": "127.0.0.1",
        "NASLOOP_SERVER__MAX_WORKERS": str(max(16, threads * 2)),
    }
    if args.handler_threads:
        env["NASLOOP_NOVELTY__HANDLER_THREADS"] = str(args.handler_threads)
    t0 = time.perf_counter()
    with novelty_server(env, store_dir.parent / "server.log", timeout_s=300) as server:
        report("service start incl. restore of the index", time.perf_counter() - t0, "s")
        report("novelty.handler_threads", args.handler_threads, "", "0: server.max_workers")
        counter = iter(range(len(fresh)))
        lock = threading.Lock()
        with connect(server.address) as ch:
            stub = pb_grpc.NoveltyStub(ch)

            def check_and_add() -> bool:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return False
                stub.CheckAndAdd(
                    pb.CheckAndAddRequest(code=fresh[i], id=f"grpc-{i}", namespace="bench")
                )
                return True

            def baseline() -> bool:  # the same path through client and server, no work
                stub.GetNamespace(pb.GetNamespaceRequest(name="bench"))
                return True

            rates = [_rate(threads, seconds, check_and_add) for _ in range(rounds)]
            floor = _rate(threads, seconds, baseline)
        median = statistics.median(rates)
        rounds_text = ", ".join(f"{r:.0f}" for r in rates)
        report(
            f"check-and-add via gRPC, {threads} client threads (median)",
            median,
            "ops/s",
            f"target >= 500; rounds: {rounds_text}",
        )
        report(f"GetNamespace via gRPC, {threads} client threads (baseline)", floor, "ops/s")
        report("check-and-add / baseline", median / floor, "ratio")
        server.stop()


def snapshot_restore(store: ObjectStore, label: str) -> None:
    # No fingerprint workers: their start-up is not part of restoring the index.
    engine = NoveltyEngine(store, NoveltyConfig(fingerprint_workers=0))
    t0 = time.perf_counter()
    engine.open()
    restore = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.snapshot(["bench"])
    snap = time.perf_counter() - t0
    n = len(engine.namespace("bench").index)
    report(f"snapshot of {n} entries ({label})", snap, "s")
    report(f"restore of {n} entries ({label})", restore, "s")
    report(f"snapshot + restore ({label})", snap + restore, "s", "target <= 10")
    engine.close()


def _index_matrix(indexed: list[str], entries: int, cache: Path | None) -> np.ndarray:
    """The fingerprints of the index sources, loaded from ``cache`` when it has them."""
    if cache is not None and cache.exists():
        matrix = np.load(cache)
        if matrix.shape == (entries, PARAMS.num_perm):
            report("fingerprints of the index sources loaded", 0.0, "s", str(cache))
            return matrix
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:
        matrix = np.stack(pool.map(_fingerprint, indexed, chunksize=500))
    report("fingerprint the index sources (all cores)", time.perf_counter() - t0, "s")
    if cache is not None:
        np.save(cache, matrix)
    return matrix


def _seed(store: ObjectStore, ids: list[str], matrix: np.ndarray) -> ObjectStore:
    """``store`` with the namespace ``bench`` holding the index as one snapshot."""
    nstore = NamespaceStore(store, "bench")
    nstore.write_meta(PARAMS.to_dict())
    nstore.write_snapshot(len(ids), ids, matrix)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="per gRPC round")
    ap.add_argument("--rounds", type=int, default=3, help="gRPC rounds (the machine is noisy)")
    ap.add_argument("--s3", action="store_true", help="also snapshot/restore on moto's S3")
    ap.add_argument("--only", choices=["grpc"], help="run only this part")
    ap.add_argument(
        "--handler-threads",
        type=int,
        default=6,
        help="the service's novelty.handler_threads (0: server.max_workers, here 16)",
    )
    ap.add_argument(
        "--matrix-cache", type=Path, help="a .npy of the index fingerprints to reuse (or write)"
    )
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)

    t0 = time.perf_counter()
    grpc_budget = int(args.rounds * args.seconds * 1500)  # more than any round can use
    sources = list(generate_sources(args.entries + args.queries + grpc_budget, seed=2026))
    indexed = sources[: args.entries]
    fresh = sources[args.entries :]
    report("generate sources", time.perf_counter() - t0, "s", f"{len(sources)} sources")

    matrix = _index_matrix(indexed, args.entries, args.matrix_cache)
    ids = [f"seed-{i}" for i in range(len(indexed))]
    if args.only == "grpc":
        with tempfile.TemporaryDirectory() as tmp:
            _seed(LocalStore(Path(tmp) / "store"), ids, matrix)
            grpc_throughput(Path(tmp) / "store", fresh[args.queries :], args)
        return

    t0 = time.perf_counter()
    index = MinHashIndex.restore(PARAMS, ids, matrix)
    report(f"build LSH index of {len(index)} entries", time.perf_counter() - t0, "s")
    lsh_vs_brute_force(index, indexed, fresh)
    index_check_and_add(index, fresh[: args.queries])
    del index

    with tempfile.TemporaryDirectory() as tmp:
        store = _seed(LocalStore(Path(tmp) / "store"), ids, matrix)
        snapshot_restore(store, "local directory")

        half = args.queries // 2
        for label, workers, batch in (
            ("fingerprint in the calling thread", 0, fresh[:half]),
            ("fingerprint worker processes", 2, fresh[half : args.queries]),
        ):
            engine = NoveltyEngine(store, NoveltyConfig(fingerprint_workers=workers))
            engine.open()
            in_process_check_and_add(engine, batch, label)
            engine.close()

        grpc_throughput(Path(tmp) / "store", fresh[args.queries :], args)

    if args.s3:
        from s3server import running_s3_server

        from nasloop.store import S3Store

        with running_s3_server() as endpoint:
            s3 = S3Store(
                endpoint, "bench", access_key="testing", secret_key="testing", region="us-east-1"
            )
            snapshot_restore(_seed(s3, ids, matrix), "S3 on loopback (moto)")


if __name__ == "__main__":
    main()
