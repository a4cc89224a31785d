"""In-memory MinHash index of one novelty namespace: LSH retrieval, then the Jaccard estimate.

Entries are fingerprints from :mod:`nasloop.fingerprint` (uint64 hash values of shape
``(num_perm,)``) under string ids. They live in a growable numpy matrix (one row each; removal
moves the last row into the hole), and a datasketch ``MinHashLSH`` retrieves the candidates of a
query, which are then ranked by the MinHash estimate ``mean(row == query)``.

LSH bands: not datasketch's error-weighted optimum, but ``b = m + 1`` bands of ``r =
num_perm // b`` rows, where ``m`` is the number of differing hash values an entry may have and
still be ``RECALL_MARGIN`` above the threshold. By pigeonhole such an entry agrees with the query
on a whole band, so LSH never misses it: ``nearest`` finds every entry whose estimate is at
least ``threshold + RECALL_MARGIN`` (deterministically), and nearly all between the threshold
and that.

Memory: the matrix takes 8 * num_perm bytes an entry, datasketch's dict-based LSH storage
about four times as much (~5 KB an entry in all at the defaults).

Not thread-safe: no locking inside. The caller serialises all calls on one index (the novelty
engine holds one lock around every index call, which also makes check-and-add atomic).
"""

from __future__ import annotations

import gc
import math
import operator
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from nasloop.fingerprint import MINHASH_SCHEME, MINHASH_SEED, TokenMode, minhash

RECALL_MARGIN = 0.05


@dataclass(frozen=True)
class IndexParams:
    """Fingerprint and index parameters of a namespace, fixed when it is created."""

    mode: TokenMode = TokenMode.CANONICAL
    shingle_size: int = 7
    num_perm: int = 128
    threshold: float = 0.85

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", TokenMode(self.mode))
        except ValueError:
            modes = ", ".join(m.value for m in TokenMode)
            raise ValueError(f"mode must be one of {modes}, got {self.mode!r}") from None
        _check_int("shingle_size", self.shingle_size, 1, 64)
        _check_int("num_perm", self.num_perm, 16, 1024)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float):
            raise ValueError(f"threshold must be a number, got {self.threshold!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        object.__setattr__(self, "threshold", float(self.threshold))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        unknown = set(data) - {"mode", "shingle_size", "num_perm", "threshold"}
        if unknown:
            raise ValueError(f"unknown index parameters: {', '.join(sorted(unknown))}")
        return cls(**data)

    def same_fingerprint(self, other: IndexParams) -> bool:
        """Whether fingerprints under ``other`` are comparable with these (threshold aside)."""
        return (self.mode, self.shingle_size, self.num_perm) == (
            other.mode,
            other.shingle_size,
            other.num_perm,
        )

    def fingerprint(self, code: str) -> np.ndarray:
        """The fingerprint of ``code`` under these parameters (ValueError if it has no tokens)."""
        return minhash(code, self.mode, self.shingle_size, self.num_perm)

    def lsh_bands(self) -> tuple[int, int]:
        """(bands, rows per band) that retrieve every entry ``RECALL_MARGIN`` above threshold."""
        target = min(self.threshold + RECALL_MARGIN, 1.0)
        mismatches = self.num_perm - math.ceil(target * self.num_perm - 1e-9)
        bands = max(mismatches + 1, 2)
        return bands, self.num_perm // bands


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


class MinHashIndex:
    """Fingerprints under string ids, with LSH retrieval of near neighbours. Not thread-safe."""

    def __init__(self, params: IndexParams | None = None) -> None:
        self.params = params or IndexParams()
        self._num_perm = self.params.num_perm
        self._lsh = MinHashLSH(num_perm=self._num_perm, params=self.params.lsh_bands())
        self._ids: list[str] = []  # row -> id
        self._rows: dict[str, int] = {}  # id -> row
        self._matrix = np.empty((64, self._num_perm), dtype=np.uint64)
        # (band tables, id -> band keys) when the LSH keeps plain dicts; None until the first
        # insert (which datasketch must see), False for another storage.
        self._plain: tuple[list[defaultdict], defaultdict] | Literal[False] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._rows

    def add(self, entry_id: str, hashvalues: np.ndarray | Sequence[int]) -> None:
        """Add a fingerprint. KeyError if the id is present; ValueError if it is malformed."""
        if not isinstance(entry_id, str) or not entry_id:
            raise ValueError(f"entry id must be a non-empty string, got {entry_id!r}")
        if entry_id in self._rows:
            raise KeyError(f"entry id already present: {entry_id!r}")
        hv = self._checked(hashvalues)
        row = len(self._ids)
        if row == len(self._matrix):
            grown = np.empty((2 * row, self._num_perm), dtype=np.uint64)
            grown[:row] = self._matrix
            self._matrix = grown
        self._lsh_insert(entry_id, hv)
        self._matrix[row] = hv
        self._ids.append(entry_id)
        self._rows[entry_id] = row

    def remove(self, entry_id: str) -> bool:
        """Remove an entry; False if there was none under that id."""
        row = self._rows.pop(entry_id, None)
        if row is None:
            return False
        self._lsh.remove(entry_id)
        last = len(self._ids) - 1
        if row != last:
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        return True

    def vector(self, entry_id: str) -> np.ndarray:
        """A copy of the fingerprint stored under ``entry_id`` (KeyError if absent)."""
        return self._matrix[self._rows[entry_id]].copy()

    def nearest(self, hashvalues: np.ndarray | Sequence[int]) -> tuple[str | None, float]:
        """The most similar entry among the LSH candidates and its estimated Jaccard similarity.

        (None, 0.0) when LSH retrieves no candidate. Ties go to the smallest id.
        """
        hv = self._checked(hashvalues)
        candidates = list(self._candidates(hv))
        if not candidates:
            return None, 0.0
        # itemgetter: one C call for all lookups, about twice as fast as fromiter(map(...))
        found = operator.itemgetter(*candidates)(self._rows)
        rows = np.array(found if len(candidates) > 1 else (found,), dtype=np.intp)
        return self._best(self._matrix[rows], hv, candidates)

    def nearest_exhaustive(
        self, hashvalues: np.ndarray | Sequence[int]
    ) -> tuple[str | None, float]:
        """Like :meth:`nearest`, but compares against every entry (brute force)."""
        hv = self._checked(hashvalues)
        if not self._ids:
            return None, 0.0
        return self._best(self._matrix[: len(self._ids)], hv, self._ids)

    def is_novel(self, similarity: float) -> bool:
        """Whether a nearest similarity is below this namespace's threshold."""
        return similarity < self.params.threshold

    def export(self) -> tuple[list[str], np.ndarray]:
        """(ids, matrix): a copy of the entries, row i of the matrix belonging to ids[i]."""
        return list(self._ids), self._matrix[: len(self._ids)].copy()

    @classmethod
    def restore(cls, params: IndexParams, ids: list[str], matrix: np.ndarray) -> MinHashIndex:
        """An index holding ``ids`` with the fingerprints in the rows of ``matrix`` (as from
        :meth:`export`). Band keys are computed for all rows at once: ~3 s for 100,000 entries.
        """
        index = cls(params)
        matrix = np.asarray(matrix)
        if matrix.dtype != np.uint64 or matrix.shape != (len(ids), index._num_perm):
            raise ValueError(
                f"matrix must be uint64 of shape ({len(ids)}, {index._num_perm}), "
                f"got {matrix.dtype} {matrix.shape}"
            )
        rows = {entry_id: row for row, entry_id in enumerate(ids)}
        if len(rows) != len(ids):
            raise ValueError("duplicate entry ids")
        if not all(isinstance(i, str) and i for i in rows):
            raise ValueError("entry ids must be non-empty strings")
        index._ids = list(ids)
        index._rows = rows
        index._matrix = np.array(matrix, dtype=np.uint64, order="C")
        if not ids:
            index._matrix = np.empty((64, index._num_perm), dtype=np.uint64)
            return index
        # The first entry goes in through MinHashLSH.insert (which also records the MinHash
        # scheme); the rest straight into its storage, band keys computed for all rows at once.
        lsh = index._lsh
        lsh.insert(ids[0], cls._lean(index._matrix[0]), check_duplication=False)
        band_keys = index._band_keys(index._matrix[1:])
        # Millions of new sets would trigger full garbage collections over and over (most of
        # the restore time); none of them can be garbage yet.
        rest = ids[1:]
        with _gc_paused():
            for table, keys in zip(lsh.hashtables, band_keys, strict=True):
                sets = _plain_dict(table, set)
                if sets is None:
                    for key, entry_id in zip(keys, rest, strict=True):
                        table.insert(key, entry_id)
                else:  # in-memory storage: skip a method call per entry and band
                    for key, entry_id in zip(keys, rest, strict=True):
                        sets[key].add(entry_id)
            per_entry = zip(rest, map(list, zip(*band_keys, strict=True)), strict=True)
            lists = _plain_dict(lsh.keys, list)
            if lists is None:
                for entry_id, keys in per_entry:
                    lsh.keys.insert(entry_id, *keys)
            else:
                lists.update(per_entry)
        return index

    def _lsh_insert(self, entry_id: str, hv: np.ndarray) -> None:
        """``MinHashLSH.insert``, straight into its dicts where it keeps plain ones (the same
        contents without a method call per band)."""
        plain = self._plain
        if not plain:
            self._lsh.insert(entry_id, self._lean(hv), check_duplication=False)
            if plain is None:
                found = [_plain_dict(t, set) for t in self._lsh.hashtables]
                tables = [t for t in found if t is not None]
                keys = _plain_dict(self._lsh.keys, list)
                ok = len(tables) == len(found)
                self._plain = (tables, keys) if keys is not None and ok else False
            return
        tables, keys = plain
        bands = self._row_band_keys(hv)
        keys[entry_id] = bands
        for table, band in zip(tables, bands, strict=True):
            table[band].add(entry_id)

    def _band_keys(self, matrix: np.ndarray) -> list[list[bytes]]:
        """Per band, the LSH band key of every row (as ``MinHashLSH`` computes it for one)."""
        swapped = matrix.byteswap()
        out = []
        for a, b in self._lsh.hashranges:
            flat = np.ascontiguousarray(swapped[:, a:b]).tobytes()
            width = (b - a) * swapped.itemsize
            out.append([flat[i : i + width] for i in range(0, len(flat), width)])
        return out

    def _row_band_keys(self, hv: np.ndarray) -> list[bytes]:
        """The LSH band keys of one fingerprint: the big-endian bytes of each band."""
        swapped = hv.byteswap()
        return [swapped[a:b].tobytes() for a, b in self._lsh.hashranges]

    def _candidates(self, hv: np.ndarray) -> set[str]:
        """The ids sharing a band with ``hv``: ``MinHashLSH.query`` without its per-key loop."""
        keys = self._row_band_keys(hv)
        return set().union(*[t.get(k) for t, k in zip(self._lsh.hashtables, keys, strict=True)])

    def _best(self, block: np.ndarray, hv: np.ndarray, ids: list[str]) -> tuple[str, float]:
        """The best of ``ids``, whose fingerprints are the rows of ``block`` (ties: smallest id)."""
        equal = np.count_nonzero(block == hv, axis=1)
        top = int(equal.max())
        best = min(ids[i] for i in np.flatnonzero(equal == top))
        return best, top / self._num_perm

    def _checked(self, hashvalues: np.ndarray | Sequence[int]) -> np.ndarray:
        """``hashvalues`` as a uint64 vector of this index's length, or ValueError."""
        if isinstance(hashvalues, np.ndarray):
            hv = hashvalues
            if hv.dtype != np.uint64:
                if hv.dtype.kind not in "iu" or (hv.dtype.kind == "i" and hv.size and hv.min() < 0):
                    raise ValueError(
                        f"hash values must be unsigned 64-bit integers, not {hv.dtype}"
                    )
                hv = hv.astype(np.uint64)
        else:  # a sequence of Python ints (np.asarray would turn big ones into floats)
            values = list(hashvalues)
            if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
                raise ValueError("hash values must be unsigned 64-bit integers")
            try:
                hv = np.array(values, dtype=np.uint64)
            except OverflowError as exc:
                raise ValueError(f"hash values must be unsigned 64-bit integers: {exc}") from None
        if hv.shape != (self._num_perm,):
            raise ValueError(f"hash values must have shape ({self._num_perm},), got {hv.shape}")
        return hv

    @staticmethod
    def _lean(hv: np.ndarray) -> LeanMinHash:
        """A LeanMinHash over ``hv`` without datasketch's per-sketch checks and copies."""
        lean = LeanMinHash.__new__(LeanMinHash)
        lean.seed, lean.scheme, lean.hashvalues = MINHASH_SEED, MINHASH_SCHEME, hv
        return lean


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plain_dict(storage: object, kind: type) -> defaultdict | None:
    """The ``defaultdict(kind)`` behind datasketch's in-memory storage, if that is what it is."""
    d = getattr(storage, "_dict", None)
    return d if isinstance(d, defaultdict) and d.default_factory is kind else None
