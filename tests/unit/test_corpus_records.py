"""Corpus records: fingerprints, validation, dedupe and the store round trip (local and S3)."""

from __future__ import annotations

import json

import pytest

from nasloop.corpus.records import (
    FORMAT,
    RECORDS_FILE,
    Corpus,
    CorpusCorrupt,
    CorpusError,
    CorpusNotFound,
    CorpusRecord,
    dedupe,
    dumps_records,
    fingerprint,
    load_corpus,
    loads_records,
    make_record,
    record_from_dict,
    record_to_dict,
    save_corpus,
)
from nasloop.store import IntegrityError, ObjectNotFound, ObjectStore

NET = '''
import torch
from torch import nn


def supported_hyperparameters():
    return {"lr", "momentum"}


class Net(nn.Module):
    """A small CNN."""

    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)  # first block
        self.head = nn.Linear(16, out_shape[0])

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))

    def train_setup(self, prm):
        self.criteria = (nn.CrossEntropyLoss(),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])

    def learn(self, train_data):
        for inputs, labels in train_data:
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            self.optimizer.step()
'''

# The same network with other names, other comments, no docstring and another layout.
RENAMED = '''
import torch
from torch import nn


def supported_hyperparameters():
    # what the net accepts
    return {"lr", "momentum"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.stem_conv = nn.Conv2d(in_shape[1], 16, 3, padding=1,)
        self.classifier = nn.Linear(16, out_shape[0])

    def forward(self, images):
        """Logits."""
        feats = torch.relu(self.stem_conv(images))   # activations
        return self.classifier(
            torch.flatten(nn.functional.adaptive_avg_pool2d(feats, 1), 1)
        )

    def train_setup(self, prm):
        self.criteria = (nn.CrossEntropyLoss(),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])

    def learn(self, batches):
        for xb, yb in batches:
            self.optimizer.zero_grad()
            err = self.criteria[0](self(xb), yb)
            err.backward()
            self.optimizer.step()
'''

# A structural change: another layer in forward.
DEEPER = NET.replace(
    "h = torch.relu(self.conv(x))", "h = torch.relu(self.conv(x))\n        h = torch.tanh(h)"
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


def sample_records() -> list[CorpusRecord]:
    return [
        make_record(NET, "seed", id="seed-0", dataset="digits", accuracy=0.5, parameter_count=10),
        make_record(DEEPER, "lemur", id="lemur/Deeper/cifar10", dataset="cifar10"),
        make_record(
            NET.replace("# first block", "# café ✓ 🚀"),
            "generated",
            id="run1/c3/7",
            accuracy=1,
        ),
    ]


# -- fingerprints -------------------------------------------------------------------------------
def test_fingerprint_is_invariant_under_renaming_comments_and_layout() -> None:
    fp = fingerprint(NET)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(RENAMED) == fp
    assert fingerprint(NET.replace("# first block", "# another comment")) == fp
    assert fingerprint(DEEPER) != fp
    assert fingerprint(NET.replace("nn.Conv2d", "nn.Linear")) != fp


def test_make_record_computes_fingerprint_and_default_id() -> None:
    r = make_record(NET, "seed")
    assert r.fingerprint == fingerprint(NET)
    assert r.id == f"seed-{r.fingerprint[:16]}"
    assert (r.dataset, r.accuracy, r.parameter_count) == ("", None, 0)
    assert make_record(NET, "seed", accuracy=1).accuracy == 1.0
    assert isinstance(make_record(NET, "seed", accuracy=1).accuracy, float)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "id must be a non-empty string"),
        ({"id": "a\nb"}, "printable"),
        ({"id": "x" * 257}, "printable"),
        ({"code": ""}, "code must be a non-empty string"),
        ({"code": "  \n"}, "code must be a non-empty string"),
        ({"source": "web"}, "source must be one of"),
        ({"source": ["seed"]}, "source must be one of"),
        ({"dataset": None}, "dataset must be a string"),
        ({"accuracy": 1.5}, r"accuracy must be in \[0, 1\]"),
        ({"accuracy": -0.1}, r"accuracy must be in \[0, 1\]"),
        ({"accuracy": float("nan")}, r"accuracy must be in \[0, 1\]"),
        ({"accuracy": "0.5"}, "accuracy must be a number or None"),
        ({"accuracy": True}, "accuracy must be a number or None"),
        ({"parameter_count": -1}, "parameter_count must be an int >= 0"),
        ({"parameter_count": 1.0}, "parameter_count must be an int >= 0"),
        ({"fingerprint": "abc"}, "fingerprint must be 64 lowercase hex digits"),
    ],
)
def test_validation_errors(changes: dict, message: str) -> None:
    fields = record_to_dict(make_record(NET, "seed", id="r"))
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        CorpusRecord(**fields)


def test_record_dict_and_jsonl_round_trip() -> None:
    records = sample_records()
    assert [record_from_dict(record_to_dict(r)) for r in records] == records
    data = dumps_records(records)
    assert data.isascii() and data.count(b"\n") == 3
    assert loads_records(data) == records
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        record_from_dict({**record_to_dict(records[0]), "extra": 1})
    with pytest.raises(ValueError, match=r"missing \['code'\]"):
        record_from_dict({k: v for k, v in record_to_dict(records[0]).items() if k != "code"})
    with pytest.raises(ValueError, match="line 2"):
        loads_records(data.replace(b'"source": "lemur"', b'"source": "nope"'))


# -- dedupe / novelty items ---------------------------------------------------------------------
def test_dedupe_first_and_best() -> None:
    a = make_record(NET, "seed", id="a", accuracy=0.3)
    b = make_record(DEEPER, "seed", id="b")
    c = make_record(RENAMED, "lemur", id="c", accuracy=0.6)  # same fingerprint as a
    d = make_record(NET, "generated", id="d")  # same fingerprint, unknown accuracy
    e = make_record(DEEPER, "seed", id="e", accuracy=0.0)  # known beats unknown
    assert [r.id for r in dedupe([a, b, c, d, e])] == ["a", "b"]
    assert [r.id for r in dedupe([a, b, c, d, e], keep="best")] == ["c", "e"]
    assert [r.id for r in dedupe([d, a, c], keep="best")] == ["c"]
    tie = make_record(NET, "seed", id="tie", accuracy=0.6)
    assert [r.id for r in dedupe([c, tie], keep="best")] == ["c"]
    assert dedupe([]) == []
    with pytest.raises(ValueError, match="keep must be"):
        dedupe([a], keep="last")  # type: ignore[arg-type]


def test_a_record_meets_the_services_as_a_candidate() -> None:
    records = sample_records()
    candidates = [r.candidate() for r in records]
    assert [(c.id, c.code, c.provenance.source) for c in candidates] == [
        (r.id, r.code, r.source) for r in records
    ]


# -- the store ----------------------------------------------------------------------------------
def test_round_trip_through_store(store: ObjectStore) -> None:
    records = sample_records()
    sha = save_corpus(store, "seed-v1", records)
    assert store.list("corpora/seed-v1/") == [
        "corpora/seed-v1/manifest.json",
        "corpora/seed-v1/records.jsonl",
    ]
    manifest = store.get_manifest("corpora/seed-v1")
    assert manifest is not None
    assert manifest["files"][RECORDS_FILE]["sha256"] == sha
    assert manifest["meta"]["format"] == FORMAT
    assert manifest["meta"]["records"] == 3
    assert load_corpus(store, "seed-v1") == records
    assert load_corpus(store, "seed-v1", sha256=sha) == records
    # Same content, same version id; saving again replaces.
    assert save_corpus(store, "seed-v1", records) == sha
    assert save_corpus(store, "seed-v1", records[:1]) != sha
    assert load_corpus(store, "seed-v1") == records[:1]
    with pytest.raises(CorpusCorrupt, match="expected"):
        load_corpus(store, "seed-v1", sha256=sha)
    # An empty corpus is a corpus.
    save_corpus(store, "empty", [])
    assert load_corpus(store, "empty") == []


def test_corpus_container(store: ObjectStore) -> None:
    corpus = Corpus("lemur", sample_records())
    assert len(corpus) == 3 and corpus[0].id == "seed-0"
    assert corpus.get("run1/c3/7") is corpus[2] and corpus.get("none") is None
    assert list(corpus) == corpus.records
    sha = corpus.save(store)
    loaded = Corpus.load(store, "lemur", sha)
    assert loaded.records == corpus.records and loaded.name == "lemur"
    with pytest.raises(ValueError, match="duplicate record id"):
        Corpus("x", [corpus[0], corpus[0]])


def test_tampered_records_are_refused(store: ObjectStore) -> None:
    save_corpus(store, "c", sample_records())
    key = "corpora/c/records.jsonl"
    data = store.get_bytes(key)
    store.put_bytes(key, data.replace(b'"accuracy": 0.5', b'"accuracy": 0.9'))
    with pytest.raises(CorpusCorrupt, match="does not match its manifest") as info:
        load_corpus(store, "c")
    assert isinstance(info.value, IntegrityError)
    store.delete(key)
    with pytest.raises(CorpusCorrupt, match=r"records\.jsonl missing"):
        load_corpus(store, "c")


def test_missing_and_malformed_corpora(store: ObjectStore) -> None:
    with pytest.raises(CorpusNotFound, match="no corpus 'nothing'") as info:
        load_corpus(store, "nothing")
    assert isinstance(info.value, ObjectNotFound) and isinstance(info.value, CorpusError)
    # Records written but no manifest yet: the corpus does not exist for readers.
    store.put_bytes("corpora/half/records.jsonl", dumps_records(sample_records()))
    with pytest.raises(CorpusNotFound):
        load_corpus(store, "half")
    # A manifest that is not JSON.
    store.put_bytes("corpora/badjson/manifest.json", b"{not json")
    with pytest.raises(CorpusCorrupt, match="unreadable manifest"):
        load_corpus(store, "badjson")
    # Some other artifact, not a corpus.
    store.put_artifact("corpora/other", {"x.bin": b"x"})
    with pytest.raises(CorpusCorrupt, match="format None"):
        load_corpus(store, "other")
    store.put_artifact("corpora/nofile", {"x.bin": b"x"}, meta={"format": FORMAT})
    with pytest.raises(CorpusCorrupt, match=r"does not list records\.jsonl"):
        load_corpus(store, "nofile")
    # Verified bytes that are not valid records.
    bad = json.dumps({**record_to_dict(sample_records()[0]), "accuracy": 7}).encode() + b"\n"
    store.put_artifact("corpora/badrec", {RECORDS_FILE: bad}, meta={"format": FORMAT})
    with pytest.raises(CorpusCorrupt, match=r"line 1: .*accuracy must be in \[0, 1\]"):
        load_corpus(store, "badrec")
    dup = dumps_records(sample_records()[:1] * 2)
    store.put_artifact("corpora/dup", {RECORDS_FILE: dup}, meta={"format": FORMAT})
    with pytest.raises(CorpusCorrupt, match="duplicate record id"):
        load_corpus(store, "dup")


def test_save_refuses_bad_names_and_duplicate_ids(local_store: ObjectStore) -> None:
    records = sample_records()
    for name in ["", "../x", "a/b", ".hidden", "x" * 200]:
        with pytest.raises(ValueError, match="invalid corpus name"):
            save_corpus(local_store, name, records)
    with pytest.raises(ValueError, match="duplicate record id 'seed-0'"):
        save_corpus(local_store, "c", [records[0], records[0]])
    with pytest.raises(ValueError, match="expected CorpusRecord"):
        save_corpus(local_store, "c", [record_to_dict(records[0])])  # type: ignore[list-item]
    assert local_store.list("corpora/") == []
