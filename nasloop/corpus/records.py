"""Corpus records and their store format (DESIGN.md, "Object store": ``corpora/<name>/``).

A corpus is a list of :class:`CorpusRecord` -- candidate code with where it came from and what it
scored. In the store it is one multi-file artifact::

    corpora/<name>/records.jsonl   one record per line (JSON, keys sorted)
    corpora/<name>/manifest.json   written last; lists records.jsonl with its SHA-256 and size

Readers trust only the manifest and verify the file against it. A record's ``fingerprint`` is
its content identity: the SHA-256 of the canonical token stream (``nasloop.fingerprint``), so
copies that differ only in names, comments, docstrings, layout or literal values (numbers and
strings become ``NUM`` / ``STR``) share a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from nasloop import layout
from nasloop.fingerprint import TokenMode, tokens
from nasloop.store.base import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    StoreError,
)
from nasloop.v1 import common_pb2 as common

SOURCES = frozenset({"seed", "lemur", "generated"})
RECORDS_FILE = "records.jsonl"
FORMAT = "nasloop.corpus/v1"
MAX_ID_LEN = 256  # the novelty service's limit on entry ids
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TOKEN_SEPARATOR = " "  # canonical tokens never hold whitespace


class CorpusError(StoreError):
    """A corpus could not be read or written."""


class CorpusNotFound(CorpusError, ObjectNotFound):
    """No complete corpus of that name is in the store."""


class CorpusCorrupt(CorpusError, IntegrityError):
    """The stored corpus does not match its manifest, or its records are malformed."""


def fingerprint(code: str) -> str:
    """Hex SHA-256 of the canonical token stream of ``code`` (renaming-invariant identity)."""
    stream = _TOKEN_SEPARATOR.join(tokens(code, TokenMode.CANONICAL))
    return hashlib.sha256(stream.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CorpusRecord:
    """One network of a corpus (a line of ``records.jsonl``): known code the loop compares its
    candidates with, not a candidate itself. It has no prompt, answer, sampling or verdict of
    this run, and carries what a candidate does not: the dataset it was scored on, its best
    known accuracy and its fingerprint (the corpus's dedupe key). Where it meets the services
    (the novelty index's corpus namespace) it is a ``Candidate``: :meth:`candidate`."""

    id: str
    code: str
    source: str  # "seed" | "lemur" | "generated"
    dataset: str  # e.g. "cifar10", "digits", "" when unknown
    accuracy: float | None  # best first-epoch accuracy when known
    parameter_count: int  # 0 when unknown
    fingerprint: str  # hex SHA-256 of the canonical token stream

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("record id must be a non-empty string")
        if len(self.id) > MAX_ID_LEN or not self.id.isprintable():
            raise ValueError(
                f"record id must be 1..{MAX_ID_LEN} printable characters: {self.id!r:.80}"
            )
        if not isinstance(self.code, str) or not self.code.strip():
            raise ValueError(f"record {self.id!r}: code must be a non-empty string")
        if not isinstance(self.source, str) or self.source not in SOURCES:
            raise ValueError(
                f"record {self.id!r}: source must be one of {sorted(SOURCES)}, got {self.source!r}"
            )
        if not isinstance(self.dataset, str):
            raise ValueError(f"record {self.id!r}: dataset must be a string, got {self.dataset!r}")
        acc = self.accuracy
        if acc is not None:
            if isinstance(acc, bool) or not isinstance(acc, int | float):
                raise ValueError(
                    f"record {self.id!r}: accuracy must be a number or None, got {acc!r}"
                )
            if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
                raise ValueError(f"record {self.id!r}: accuracy must be in [0, 1], got {acc!r}")
            object.__setattr__(self, "accuracy", float(acc))
        count = self.parameter_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"record {self.id!r}: parameter_count must be an int >= 0, got {count!r}"
            )
        if not isinstance(self.fingerprint, str) or not _SHA_RE.fullmatch(self.fingerprint):
            raise ValueError(
                f"record {self.id!r}: fingerprint must be 64 lowercase hex digits, "
                f"got {self.fingerprint!r:.80}"
            )

    def candidate(self) -> common.Candidate:
        """The record as the services exchange candidates (its id, code and source)."""
        return common.Candidate(
            id=self.id, code=self.code, provenance=common.Provenance(source=self.source)
        )


_FIELDS = tuple(f.name for f in fields(CorpusRecord))


def make_record(
    code: str,
    source: str,
    *,
    id: str | None = None,
    dataset: str = "",
    accuracy: float | None = None,
    parameter_count: int = 0,
) -> CorpusRecord:
    """A validated record with its fingerprint computed; ``id`` defaults to
    ``<source>-<first 16 hex digits of the fingerprint>``."""
    fp = fingerprint(code) if isinstance(code, str) else ""
    return CorpusRecord(
        id=id if id is not None else f"{source}-{fp[:16]}",
        code=code,
        source=source,
        dataset=dataset,
        accuracy=accuracy,
        parameter_count=parameter_count,
        fingerprint=fp,
    )


def record_to_dict(record: CorpusRecord) -> dict[str, Any]:
    return asdict(record)


def record_from_dict(data: Any) -> CorpusRecord:
    """The record in ``data`` (a dict with exactly the record's fields); ValueError if not."""
    if not isinstance(data, dict):
        raise ValueError(f"a record must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _FIELDS if k not in data]
    extra = sorted(set(data) - set(_FIELDS))
    if missing or extra:
        raise ValueError(f"record fields: missing {missing}, unknown {extra}")
    return CorpusRecord(**{k: data[k] for k in _FIELDS})


def dumps_records(records: Iterable[CorpusRecord]) -> bytes:
    """JSON Lines, one record per line, keys sorted, ASCII only (deterministic bytes)."""
    lines = (
        json.dumps(record_to_dict(r), sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
        for r in records
    )
    return "".join(lines).encode("ascii")


def loads_records(data: bytes) -> list[CorpusRecord]:
    """Parse :func:`dumps_records` output; ValueError naming the line on any bad record."""
    out = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(record_from_dict(json.loads(line)))
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"line {n}: {e}") from None
    return out


# -- selection ------------------------------------------------------------------------------------
def dedupe(
    records: Iterable[CorpusRecord], keep: Literal["first", "best"] = "first"
) -> list[CorpusRecord]:
    """One record per fingerprint, in the order each fingerprint first appears.

    ``keep="first"`` keeps the earliest record; ``keep="best"`` the one with the highest accuracy
    (unknown accuracy ranks lowest; ties keep the earlier).
    """
    if keep not in ("first", "best"):
        raise ValueError(f"keep must be 'first' or 'best', got {keep!r}")
    chosen: dict[str, CorpusRecord] = {}
    for r in records:
        old = chosen.get(r.fingerprint)
        if old is None or (keep == "best" and _rank(r) > _rank(old)):
            chosen[r.fingerprint] = r
    return list(chosen.values())


def _rank(record: CorpusRecord) -> float:
    return -1.0 if record.accuracy is None else record.accuracy


# -- the store ------------------------------------------------------------------------------------
def corpus_prefix(name: str) -> str:
    return layout.corpus_prefix(name)


def _check_unique_ids(records: Sequence[CorpusRecord]) -> None:
    seen: set[str] = set()
    for r in records:
        if not isinstance(r, CorpusRecord):
            raise ValueError(f"expected CorpusRecord, got {type(r).__name__}")
        if r.id in seen:
            raise ValueError(f"duplicate record id {r.id!r} in corpus")
        seen.add(r.id)


def save_corpus(store: ObjectStore, name: str, records: Iterable[CorpusRecord]) -> str:
    """Write the corpus as ``corpora/<name>/`` (records first, manifest last); replaces any
    corpus of that name. Returns the SHA-256 of ``records.jsonl`` as the manifest lists it (the
    content identity of this corpus version; pass it to :func:`load_corpus` to pin it)."""
    prefix = corpus_prefix(name)
    records = list(records)
    _check_unique_ids(records)
    sources: dict[str, int] = {}
    for r in records:
        sources[r.source] = sources.get(r.source, 0) + 1
    meta = {"format": FORMAT, "name": name, "records": len(records), "sources": sources}
    manifest = store.put_artifact(prefix, {RECORDS_FILE: dumps_records(records)}, meta=meta)
    return manifest["files"][RECORDS_FILE]["sha256"]


def load_corpus(store: ObjectStore, name: str, sha256: str | None = None) -> list[CorpusRecord]:
    """The records of ``corpora/<name>/``, verified against its manifest (and against
    ``sha256`` when given). Raises :class:`CorpusNotFound` or :class:`CorpusCorrupt`."""
    prefix = corpus_prefix(name)
    try:
        manifest = store.get_manifest(prefix)
    except ValueError as e:  # the manifest is not JSON
        raise CorpusCorrupt(f"corpus {name!r}: unreadable manifest: {e}") from None
    if manifest is None:
        raise CorpusNotFound(f"no corpus {name!r} in {store.url} ({prefix}/manifest.json missing)")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorpusCorrupt(f"corpus {name!r}: malformed manifest")
    fmt = (manifest.get("meta") or {}).get("format")
    if fmt != FORMAT:
        raise CorpusCorrupt(f"corpus {name!r}: format {fmt!r}, expected {FORMAT!r}")
    entry = manifest["files"].get(RECORDS_FILE)
    if not isinstance(entry, dict):
        raise CorpusCorrupt(f"corpus {name!r}: manifest does not list {RECORDS_FILE}")
    if sha256 is not None and entry.get("sha256") != sha256:
        raise CorpusCorrupt(
            f"corpus {name!r} is version {entry.get('sha256')!r}, expected {sha256!r}"
        )
    try:
        data = store.get_artifact_file(prefix, RECORDS_FILE, manifest)
    except IntegrityError as e:
        raise CorpusCorrupt(f"corpus {name!r}: {e}") from None
    except ObjectNotFound as e:
        raise CorpusCorrupt(f"corpus {name!r}: {RECORDS_FILE} missing: {e}") from None
    except (KeyError, TypeError) as e:
        raise CorpusCorrupt(f"corpus {name!r}: malformed manifest entry: {e}") from None
    try:
        records = loads_records(data)
        _check_unique_ids(records)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorpusCorrupt(f"corpus {name!r}: {RECORDS_FILE}: {e}") from None
    return records


class Corpus(Sequence[CorpusRecord]):
    """A named, immutable list of records with unique ids; ``save``/``load`` via the store."""

    def __init__(self, name: str, records: Iterable[CorpusRecord] = ()) -> None:
        corpus_prefix(name)  # validates the name
        self.name = name
        self._records = tuple(records)
        _check_unique_ids(self._records)
        self._by_id = {r.id: r for r in self._records}

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: Any) -> Any:
        return self._records[index]

    def __iter__(self) -> Iterator[CorpusRecord]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, {len(self)} records)"

    def get(self, record_id: str) -> CorpusRecord | None:
        return self._by_id.get(record_id)

    @property
    def records(self) -> list[CorpusRecord]:
        return list(self._records)

    def save(self, store: ObjectStore) -> str:
        return save_corpus(store, self.name, self._records)

    @classmethod
    def load(cls, store: ObjectStore, name: str, sha256: str | None = None) -> Corpus:
        return cls(name, load_corpus(store, name, sha256))
