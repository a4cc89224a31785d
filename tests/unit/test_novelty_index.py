"""The in-memory MinHash index of the novelty service: parameters, entries, LSH vs brute force."""

from __future__ import annotations

import random
import re
from functools import cache

import numpy as np
import pytest
from cnn_sources import generate_sources
from datasketch import MinHashLSH

from nasloop.fingerprint import TokenMode
from services.novelty.index import RECALL_MARGIN, IndexParams, MinHashIndex

PARAMS = IndexParams()


def perturb(src: str, rng: random.Random) -> str:
    """A structurally edited copy: lines dropped, duplicated, swapped or layers changed."""
    lines = src.splitlines()
    for _ in range(rng.randrange(1, 6)):
        i = rng.randrange(len(lines))
        op = rng.randrange(4)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2 and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        else:
            lines[i] = lines[i].replace("Conv2d", "ConvTranspose2d").replace("ReLU", "GELU")
    return "\n".join(lines)


@cache
def corpus() -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """2,000 generated sources with fingerprints, and 600 queries: 400 edited copies, 200 new."""
    sources = list(generate_sources(2_200, seed=11))
    indexed, fresh = sources[:2_000], sources[2_000:]
    rng = random.Random(3)
    queries = [perturb(rng.choice(indexed), rng) for _ in range(400)] + fresh
    matrix = np.stack([PARAMS.fingerprint(s) for s in indexed])
    ids = [f"src-{i}" for i in range(len(indexed))]
    return ids, matrix, [PARAMS.fingerprint(q) for q in queries]


def random_hv(rng: np.random.Generator, num_perm: int = 128) -> np.ndarray:
    return rng.integers(0, 2**64 - 1, num_perm, dtype=np.uint64, endpoint=True)


# -- parameters ------------------------------------------------------------------------------


def test_params_defaults_round_trip_and_accept_mode_values() -> None:
    assert PARAMS.to_dict() == {
        "mode": "canonical",
        "shingle_size": 7,
        "num_perm": 128,
        "threshold": 0.85,
    }
    assert IndexParams.from_dict(PARAMS.to_dict()) == PARAMS
    raw = IndexParams.from_dict({"mode": "raw", "threshold": 1})
    assert raw.mode is TokenMode.RAW and raw.threshold == 1.0 and raw.shingle_size == 7
    assert PARAMS.same_fingerprint(IndexParams(threshold=0.5))
    assert not PARAMS.same_fingerprint(raw)


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "tokens"},
        {"shingle_size": 0},
        {"shingle_size": 2.5},
        {"shingle_size": True},
        {"num_perm": 1},
        {"num_perm": 100_000},
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"threshold": "0.8"},
        {"bands": 4},
    ],
)
def test_params_are_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        IndexParams.from_dict(bad)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_lsh_bands_guarantee_recall_above_the_margin(threshold: float, num_perm: int) -> None:
    bands, rows = IndexParams(num_perm=num_perm, threshold=threshold).lsh_bands()
    assert bands >= 2 and rows >= 1 and bands * rows <= num_perm
    # An entry at threshold + margin differs in at most this many positions: fewer than bands.
    mismatches = num_perm - int(np.ceil(min(threshold + RECALL_MARGIN, 1.0) * num_perm - 1e-9))
    assert mismatches < bands
    assert PARAMS.lsh_bands() == (13, 9)


# -- entries ---------------------------------------------------------------------------------


def test_add_remove_contains_and_errors() -> None:
    rng = np.random.default_rng(0)
    index = MinHashIndex()
    assert len(index) == 0 and index.nearest(random_hv(rng)) == (None, 0.0)
    assert index.nearest_exhaustive(random_hv(rng)) == (None, 0.0)
    hvs = {f"e{i}": random_hv(rng) for i in range(200)}  # past the initial capacity
    for entry_id, hv in hvs.items():
        index.add(entry_id, hv)
    assert len(index) == 200 and "e7" in index and "x" not in index
    with pytest.raises(KeyError):
        index.add("e7", random_hv(rng))
    bad_values = [random_hv(rng, 64), random_hv(rng).astype(np.float64), np.full(128, -1)]
    bad_values += [[-1] * 128, [0.5] * 128, ["1"] * 128, [2**64] * 128]
    for bad in bad_values:
        with pytest.raises(ValueError):
            index.add("new", bad)
    with pytest.raises(ValueError):
        index.add("", random_hv(rng))
    assert "new" not in index and len(index) == 200

    assert index.remove("e0") and not index.remove("e0") and "e0" not in index
    assert index.remove("e199")  # the last row
    del hvs["e0"], hvs["e199"]
    assert len(index) == 198
    for entry_id, hv in hvs.items():  # rows moved by removal still answer for their ids
        assert index.nearest(hv) == (entry_id, 1.0) == index.nearest_exhaustive(hv)
        assert np.array_equal(index.vector(entry_id), hv)
    index.add("e0", hvs["e1"])  # ids may be reused after removal; ties go to the smallest id
    assert index.nearest(hvs["e1"]) == ("e0", 1.0)


def test_hash_values_from_python_ints_are_accepted() -> None:
    index = MinHashIndex()
    hv = random_hv(np.random.default_rng(1))
    index.add("a", [int(v) for v in hv])
    assert index.nearest(hv) == ("a", 1.0)
    assert index.is_novel(0.84) and not index.is_novel(0.85)


def test_similar_code_is_found_and_different_code_is_novel() -> None:
    sources = list(generate_sources(50, seed=5))
    index = MinHashIndex()
    for i, src in enumerate(sources[:40]):
        index.add(f"s{i}", PARAMS.fingerprint(src))
    renamed = sources[3] + "\n# a comment\n"
    for old, new in (("x", "inp"), ("inputs", "xb"), ("labels", "yb"), ("loss", "err")):
        renamed = re.sub(rf"\b{old}\b", new, renamed)
    for attr in ("layer", "features", "stem", "head", "block", "classifier", "body", "fc"):
        renamed = renamed.replace(f"self.{attr}", f"self.my_{attr}")
    assert renamed != sources[3]
    assert index.nearest(PARAMS.fingerprint(renamed)) == ("s3", 1.0)
    for src in sources[40:]:
        _, similarity = index.nearest(PARAMS.fingerprint(src))
        assert index.is_novel(similarity)


# -- LSH against brute force -----------------------------------------------------------------


def test_lsh_nearest_agrees_with_exhaustive_search() -> None:
    ids, matrix, queries = corpus()
    index = MinHashIndex.restore(PARAMS, ids, matrix)
    threshold = PARAMS.threshold
    agree = 0
    near = 0
    for hv in queries:
        lsh_id, lsh_sim = index.nearest(hv)
        ex_id, ex_sim = index.nearest_exhaustive(hv)
        assert lsh_sim <= ex_sim
        if ex_sim >= threshold + RECALL_MARGIN:  # guaranteed by the band layout
            near += 1
            assert (lsh_id, lsh_sim) == (ex_id, ex_sim)
        agree += index.is_novel(lsh_sim) == index.is_novel(ex_sim)
    assert near >= 50  # the sample does exercise near-duplicates
    assert agree / len(queries) >= 0.98


def test_candidates_are_those_of_datasketch_query() -> None:
    ids, matrix, queries = corpus()
    index = MinHashIndex.restore(PARAMS, ids[:500], matrix[:500])
    for hv in queries[:100]:
        assert index._candidates(hv) == set(index._lsh.query(index._lean(hv)))


def test_added_entries_fill_the_lsh_as_datasketch_own_insert_does() -> None:
    """``add`` writes straight into the LSH's dicts after its first insert; the tables must be
    those datasketch builds itself, through removes and re-adds too."""
    ids, matrix, queries = corpus()
    index = MinHashIndex(PARAMS)
    reference = MinHashLSH(num_perm=PARAMS.num_perm, params=PARAMS.lsh_bands())
    for entry_id, hv in zip(ids[:300], matrix[:300], strict=True):
        index.add(entry_id, hv)
        reference.insert(entry_id, index._lean(hv), check_duplication=False)
    for entry_id in ids[:300:7]:
        index.remove(entry_id)
        reference.remove(entry_id)
    for entry_id, hv in zip(ids[:300:14], matrix[:300:14], strict=True):
        index.add(entry_id, hv)
        reference.insert(entry_id, index._lean(hv), check_duplication=False)
    assert index._plain  # the fast path is what was tested
    for table, expected in zip(index._lsh.hashtables, reference.hashtables, strict=True):
        assert {k: set(v) for k, v in table._dict.items() if v} == {
            k: set(v) for k, v in expected._dict.items() if v
        }
    assert dict(index._lsh.keys._dict) == dict(reference.keys._dict)
    for hv in queries[:50]:
        assert index._candidates(hv) == set(reference.query(index._lean(hv)))


def test_generated_sources_are_distinct_and_mostly_novel() -> None:
    _, matrix, _ = corpus()
    assert len(np.unique(matrix, axis=0)) == len(matrix)
    index = MinHashIndex()
    novel = 0
    for i, hv in enumerate(matrix[:500]):
        novel += index.is_novel(index.nearest(hv)[1])
        index.add(str(i), hv)
    assert novel >= 450


# -- export / restore ------------------------------------------------------------------------


def test_export_restore_round_trip_gives_identical_answers() -> None:
    ids, matrix, queries = corpus()
    built = MinHashIndex(PARAMS)
    for entry_id, hv in zip(ids[:800], matrix[:800], strict=True):
        built.add(entry_id, hv)
    for entry_id in ids[:800:7]:
        built.remove(entry_id)
    exported_ids, exported = built.export()
    assert exported.dtype == np.uint64 and exported.shape == (len(built), 128)
    restored = MinHashIndex.restore(PARAMS, exported_ids, exported)
    assert len(restored) == len(built)
    probes = queries[:150] + list(matrix[:800:5])
    for hv in probes:
        assert restored.nearest(hv) == built.nearest(hv)
        assert restored.nearest_exhaustive(hv) == built.nearest_exhaustive(hv)
        assert sorted(restored._lsh.query(restored._lean(hv))) == sorted(
            built._lsh.query(built._lean(hv))
        )
    # the restored index keeps working
    restored.add("extra", matrix[1_000])
    assert restored.nearest(matrix[1_000]) == ("extra", 1.0)
    assert restored.remove(exported_ids[0]) and exported_ids[0] not in restored
    # an entry that went in through the bulk path leaves the LSH tables too
    bulk_id, bulk_hv = exported_ids[5], exported[5]
    assert bulk_id in restored._lsh.query(restored._lean(bulk_hv))
    assert restored.remove(bulk_id)
    assert bulk_id not in restored._lsh.query(restored._lean(bulk_hv))
    assert restored.nearest(bulk_hv)[0] != bulk_id
    exported[0, 0] ^= np.uint64(1)  # export is a copy
    assert built.export()[1][0, 0] != exported[0, 0]


def test_restore_validates_and_handles_empty() -> None:
    rng = np.random.default_rng(2)
    matrix = np.stack([random_hv(rng) for _ in range(3)])
    with pytest.raises(ValueError):
        MinHashIndex.restore(PARAMS, ["a", "b"], matrix)
    with pytest.raises(ValueError):
        MinHashIndex.restore(PARAMS, ["a", "b", "a"], matrix)
    with pytest.raises(ValueError):
        MinHashIndex.restore(PARAMS, ["a", "b", "c"], matrix.astype(np.int64))
    with pytest.raises(ValueError):
        MinHashIndex.restore(IndexParams(num_perm=64), ["a", "b", "c"], matrix)
    empty = MinHashIndex.restore(PARAMS, [], np.empty((0, 128), dtype=np.uint64))
    assert len(empty) == 0 and empty.nearest(matrix[0]) == (None, 0.0)
    empty.add("a", matrix[0])
    assert empty.nearest(matrix[0]) == ("a", 1.0)
