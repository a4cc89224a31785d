"""Durable state of one namespace in the object store.

Layout (DESIGN.md keys, under ``novelty/<namespace>/``)::

    namespace.json                       name and fingerprint parameters (written at creation)
    journal/<first>-<last>.json          ops with sequence numbers first..last (write-ahead), or,
    journal/<first>-<tag>.log            where the store can append (a local directory): one
                                         JSON line per write, from op <first> on
    snapshot/<seq>/{ids.json, hashvalues.npy, manifest.json}
                                         every entry as of op <seq>; manifest written last

Every acknowledged op is in a journal object or a snapshot before the caller hears back.
Restore = newest complete snapshot + the journal ops after it, in sequence order.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasloop import layout
from nasloop.store import ObjectStore, join_key

log = logging.getLogger("nasloop.novelty.persistence")

SEQ_WIDTH = 12


def encode_vector(hv: np.ndarray) -> str:
    return base64.b64encode(hv.astype("<u8").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)


@dataclass
class Restored:
    params: dict[str, Any]
    snapshot_seq: int = 0
    ids: list[str] = field(default_factory=list)
    matrix: np.ndarray | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)  # journal ops after the snapshot


class NamespaceStore:
    """Reads and writes one namespace's keys. Stateless apart from its prefix."""

    def __init__(self, store: ObjectStore, name: str) -> None:
        self.store = store
        self.name = name
        self.prefix = layout.namespace_prefix(name)
        self._segment: str | None = None  # journal segment being appended to
        self._segment_lock = threading.Lock()

    @staticmethod
    def list_names(store: ObjectStore) -> list[str]:
        names = []
        for key in store.list(f"{layout.NOVELTY}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "namespace.json":
                names.append(parts[1])
        return names

    def write_meta(self, params: dict[str, Any]) -> None:
        self.store.put_json(
            join_key(self.prefix, "namespace.json"),
            {
                "name": self.name,
                "params": params,
            },
        )

    def append_journal(self, ops: list[dict[str, Any]]) -> None:
        first, last = ops[0]["seq"], ops[-1]["seq"]
        if not self.store.supports_append:
            name = f"{first:0{SEQ_WIDTH}d}-{last:0{SEQ_WIDTH}d}.json"
            self.store.put_bytes(self._journal_key(name), json.dumps(ops).encode())
            return
        # One append per write instead of one new object: far cheaper on a local disk.
        with self._segment_lock:
            if self._segment is None:
                # Unique even when a restart reuses `first` (after a torn, unacknowledged write).
                name = f"{first:0{SEQ_WIDTH}d}-{uuid.uuid4().hex[:8]}.log"
                self._segment = self._journal_key(name)
            try:
                self.store.append_bytes(self._segment, json.dumps(ops).encode() + b"\n")
            except Exception:
                self._segment = None  # a torn write must stay the last line of its segment
                raise

    def _journal_key(self, name: str) -> str:
        return join_key(self.prefix, "journal", name)

    def _journal_keys(self) -> list[str]:
        return self.store.list(join_key(self.prefix, "journal") + "/")

    def _read_journal(self, key: str) -> list[dict[str, Any]]:
        if key.endswith(".json"):
            return json.loads(self.store.get_bytes(key))
        ops: list[dict[str, Any]] = []
        lines = self.store.get_bytes(key).split(b"\n")
        for number, line in enumerate(lines):
            if not line:
                continue
            try:
                ops.extend(json.loads(line))
            except ValueError:
                if number < len(lines) - 1:
                    raise
                # A torn last line: that write never completed, so it was never acknowledged.
                log.warning("torn journal tail ignored", extra={"key": key})
        return ops

    def _last_seq(self, key: str) -> int:
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".json"):  # <first>-<last>.json: no need to read it
            return int(name.removesuffix(".json").partition("-")[2])
        ops = self._read_journal(key)
        return ops[-1]["seq"] if ops else 0

    def write_snapshot(self, seq: int, ids: list[str], matrix: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, matrix.astype("<u8"), allow_pickle=False)
        self.store.put_artifact(
            join_key(self.prefix, "snapshot", f"{seq:0{SEQ_WIDTH}d}"),
            {"ids.json": json.dumps(ids).encode(), "hashvalues.npy": buf.getvalue()},
            meta={"namespace": self.name, "seq": seq, "entries": len(ids)},
        )

    def compact(self, seq: int) -> None:
        """Drop journal objects and older snapshots that the snapshot at ``seq`` covers."""
        with self._segment_lock:
            self._segment = None  # the next write starts a new segment
        for key in self._journal_keys():
            if self._last_seq(key) > seq:
                continue
            with self._segment_lock:
                if key != self._segment:  # never the segment a write is appending to
                    self.store.delete(key)
        for other in self._snapshot_seqs():
            if other < seq:
                self.store.delete_prefix(
                    join_key(self.prefix, "snapshot", f"{other:0{SEQ_WIDTH}d}") + "/"
                )

    def delete_meta(self) -> None:
        """Remove namespace.json: from then on the namespace does not exist for a restart."""
        self.store.delete(join_key(self.prefix, "namespace.json"))

    def delete(self) -> None:
        # namespace.json first: a crash half-way leaves no namespace, only garbage keys.
        self.delete_meta()
        self.store.delete_prefix(self.prefix + "/")

    def _snapshot_seqs(self) -> list[int]:
        seqs = set()
        for key in self.store.list(join_key(self.prefix, "snapshot") + "/"):
            part = key.split("/")[3]
            if part.isdigit():
                seqs.add(int(part))
        return sorted(seqs)

    def load(self) -> Restored:
        meta = self.store.get_json(join_key(self.prefix, "namespace.json"))
        restored = Restored(params=meta["params"])
        for seq in reversed(self._snapshot_seqs()):
            prefix = join_key(self.prefix, "snapshot", f"{seq:0{SEQ_WIDTH}d}")
            manifest = self.store.get_manifest(prefix)
            if manifest is None:
                log.warning("incomplete snapshot ignored", extra={"prefix": prefix})
                continue
            ids = json.loads(self.store.get_artifact_file(prefix, "ids.json", manifest))
            raw = self.store.get_artifact_file(prefix, "hashvalues.npy", manifest)
            matrix = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.uint64)
            restored.snapshot_seq, restored.ids, restored.matrix = seq, ids, matrix
            break
        for key in self._journal_keys():
            restored.ops.extend(
                op for op in self._read_journal(key) if op["seq"] > restored.snapshot_seq
            )
        restored.ops.sort(key=lambda op: op["seq"])
        return restored
