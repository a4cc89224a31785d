"""Durable state of one namespace in the object store.

Layout (DESIGN.md keys, under ``novelty/<namespace>/``)::

    namespace.json                       name and fingerprint parameters (written at creation)
    journal/<first>-<last>.json          ops with sequence numbers first..last (write-ahead)
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasloop.store import ObjectStore, join_key

log = logging.getLogger("nasloop.novelty.persistence")

ROOT = "novelty"
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
        self.prefix = join_key(ROOT, name)

    @staticmethod
    def list_names(store: ObjectStore) -> list[str]:
        names = []
        for key in store.list(ROOT + "/"):
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
        key = join_key(self.prefix, "journal", f"{first:0{SEQ_WIDTH}d}-{last:0{SEQ_WIDTH}d}.json")
        self.store.put_bytes(key, json.dumps(ops, separators=(",", ":")).encode())

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
        for key in self.store.list(join_key(self.prefix, "journal") + "/"):
            last = _journal_range(key)[1]
            if last is not None and last <= seq:
                self.store.delete(key)
        for other in self._snapshot_seqs():
            if other < seq:
                self.store.delete_prefix(
                    join_key(self.prefix, "snapshot", f"{other:0{SEQ_WIDTH}d}") + "/"
                )

    def delete(self) -> None:
        # namespace.json first: a crash half-way leaves no namespace, only garbage keys.
        self.store.delete(join_key(self.prefix, "namespace.json"))
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
        for key in self.store.list(join_key(self.prefix, "journal") + "/"):
            last = _journal_range(key)[1]
            if last is None or last <= restored.snapshot_seq:
                continue
            restored.ops.extend(
                op
                for op in json.loads(self.store.get_bytes(key))
                if op["seq"] > restored.snapshot_seq
            )
        restored.ops.sort(key=lambda op: op["seq"])
        return restored


def _journal_range(key: str) -> tuple[int | None, int | None]:
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    first, _, last = name.partition("-")
    if not (first.isdigit() and last.isdigit()):
        return None, None
    return int(first), int(last)
