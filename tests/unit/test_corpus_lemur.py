"""LEMUR importer: an SQLite database and a folder in LEMUR's layouts, and bad inputs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nasloop.corpus.lemur import LemurError, dataset_name, import_folder, import_sqlite
from nasloop.corpus.records import CorpusRecord, fingerprint


def net(channels: int, extra: str = "") -> str:
    return (
        "import torch\nfrom torch import nn\n\n\n"
        "def supported_hyperparameters():\n    return {'lr', 'momentum'}\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, in_shape, out_shape, prm, device):\n"
        "        super().__init__()\n"
        f"        self.conv = nn.Conv2d(in_shape[1], {channels}, 3)\n"
        f"        self.fc = nn.Linear({channels}, out_shape[0]){extra}\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.flatten(self.conv(x).mean((2, 3)), 1))\n"
    )


CODES = {
    "AlexNet": net(16),
    "ResNet": net(32, "\n        self.bn = nn.BatchNorm2d(32)"),
    "NoStats": net(8, "\n        self.drop = nn.Dropout()"),
    "Late": net(4, "\n        self.act = nn.GELU()"),
}
# (nn, dataset, epoch, accuracy) as LEMUR spells datasets.
STATS = [
    ("AlexNet", "cifar-10", 1, 0.41),
    ("AlexNet", "cifar-10", 1, 0.47),  # another trial (hyperparameters) at epoch 1: best wins
    ("AlexNet", "cifar-10", 2, 0.90),  # later epochs never count
    ("AlexNet", "mnist", 1, 0.93),
    ("AlexNet", "mnist", 1, None),  # a failed trial
    ("ResNet", "cifar-10", 1, 0.52),
    ("ResNet", "cifar-10", 3, 0.70),
    ("ResNet", "svhn", 2, 0.80),  # no epoch-1 stat for svhn
    ("Late", "cifar-10", 5, 0.66),  # no epoch-1 stat at all
    ("Missing", "cifar-10", 1, 0.99),  # no code: ignored
]
EXPECTED = {
    ("AlexNet", "cifar10"): 0.47,
    ("AlexNet", "mnist"): 0.93,
    ("Late", "cifar10"): None,
    ("NoStats", ""): None,
    ("ResNet", "cifar10"): 0.52,
    ("ResNet", "svhn"): None,
}


def make_db(path: Path, stats: list[tuple] = STATS, codes: dict[str, str] = CODES) -> Path:
    """A database in LEMUR's schema (a subset of its columns, plus extras it has)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE nn (name TEXT PRIMARY KEY, code TEXT NOT NULL, id TEXT NOT NULL)")
    conn.execute(
        "CREATE TABLE stat (id TEXT PRIMARY KEY, accuracy REAL, epoch INTEGER, duration INTEGER,"
        " task TEXT, dataset TEXT, metric TEXT, nn TEXT, transform TEXT, prm TEXT)"
    )
    conn.execute("CREATE TABLE metric (name TEXT PRIMARY KEY, code TEXT NOT NULL, id TEXT)")
    conn.executemany(
        "INSERT INTO nn VALUES (?, ?, ?)", [(n, c, f"uuid-{n}") for n, c in codes.items()]
    )
    conn.executemany(
        "INSERT INTO stat VALUES (?, ?, ?, 1000, 'img-classification', ?, 'acc', ?, 'norm', 'p')",
        [(f"s{i}", acc, epoch, ds, nn) for i, (nn, ds, epoch, acc) in enumerate(stats)],
    )
    conn.commit()
    conn.close()
    return path


def make_folder(root: Path, stats: list[tuple] = STATS, codes: dict[str, str] = CODES) -> Path:
    """LEMUR's repository layout: nn/<model>.py and stat/train/<config>/<epoch>.json (lists)."""
    (root / "nn").mkdir(parents=True)
    (root / "nn" / "__init__.py").write_text("")
    for name, code in codes.items():
        (root / "nn" / f"{name}.py").write_text(code)
    files: dict[Path, list[dict]] = {}
    for nn, ds, epoch, acc in stats:
        path = root / "stat" / "train" / f"img-classification_{ds}_acc_{nn}" / f"{epoch}.json"
        trial = {"accuracy": acc, "transform": "norm", "uid": "u", "lr": 0.01, "duration": 9}
        files.setdefault(path, []).append(trial)
    for path, trials in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(trials))
    return root


def summary(records: list[CorpusRecord]) -> dict[tuple[str, str], float | None]:
    return {(r.id.split("/")[1], r.dataset): r.accuracy for r in records}


def check_records(records: list[CorpusRecord]) -> None:
    assert summary(records) == EXPECTED
    by_id = {r.id: r for r in records}
    assert list(by_id) == [
        "lemur/AlexNet/cifar10",
        "lemur/AlexNet/mnist",
        "lemur/Late/cifar10",
        "lemur/NoStats",
        "lemur/ResNet/cifar10",
        "lemur/ResNet/svhn",
    ]
    alex = by_id["lemur/AlexNet/cifar10"]
    assert alex.code == CODES["AlexNet"] and alex.source == "lemur"
    assert alex.fingerprint == fingerprint(CODES["AlexNet"]) and alex.parameter_count == 0


# -- SQLite -------------------------------------------------------------------------------------
def test_sqlite_best_first_epoch_accuracy(tmp_path: Path) -> None:
    check_records(import_sqlite(make_db(tmp_path / "ab.nn.db")))


def test_sqlite_dataset_filter(tmp_path: Path) -> None:
    db = make_db(tmp_path / "ab.nn.db")
    only = import_sqlite(db, datasets={"cifar-10"})  # LEMUR's spelling or nasloop's
    assert summary(only) == {k: v for k, v in EXPECTED.items() if k[1] == "cifar10"}
    assert import_sqlite(db, datasets={"CIFAR10", "svhn"}) == [
        r for r in import_sqlite(db) if r.dataset in ("cifar10", "svhn")
    ]
    assert import_sqlite(db, datasets={"imagenet"}) == []
    assert dataset_name(" CIFAR-100 ") == "cifar100" and dataset_name("MNIST") == "mnist"


def test_sqlite_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(LemurError, match="no LEMUR database"):
        import_sqlite(tmp_path / "absent.db")
    (tmp_path / "text.db").write_text("hello, not a database\n" * 10)
    with pytest.raises(LemurError, match="not an SQLite database"):
        import_sqlite(tmp_path / "text.db")
    (tmp_path / "trunc.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(LemurError, match=r"trunc\.db"):
        import_sqlite(tmp_path / "trunc.db")

    def db_with(sql: str) -> Path:
        path = tmp_path / f"db{abs(hash(sql))}.db"
        conn = sqlite3.connect(path)
        conn.executescript(sql)
        conn.close()
        return path

    with pytest.raises(LemurError, match="no table 'nn'"):
        import_sqlite(db_with("CREATE TABLE other (x);"))
    with pytest.raises(LemurError, match="no table 'stat'"):
        import_sqlite(db_with("CREATE TABLE nn (name, code);"))
    with pytest.raises(LemurError, match=r"table 'nn' lacks column\(s\) code"):
        import_sqlite(db_with("CREATE TABLE nn (name, id); CREATE TABLE stat (x);"))
    with pytest.raises(LemurError, match=r"table 'stat' lacks column\(s\) epoch, accuracy"):
        import_sqlite(db_with("CREATE TABLE nn (name, code); CREATE TABLE stat (nn, dataset);"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("AlexNet", "cifar-10", 1, 1.7), r"outside \[0, 1\]"),
        (("AlexNet", "cifar-10", 1, "high"), "accuracy must be a number"),
        (("AlexNet", "cifar-10", "first", 0.5), "epoch must be an integer"),
        (("AlexNet", None, 1, 0.5), "dataset must be a non-empty string"),
    ],
)
def test_sqlite_bad_rows(tmp_path: Path, row: tuple, message: str) -> None:
    db = make_db(tmp_path / "ab.nn.db", stats=[*STATS[:2], row])
    with pytest.raises(LemurError, match=rf"table stat, row 3: .*{message}"):
        import_sqlite(db)


def test_sqlite_empty_code_and_tolerated_values(tmp_path: Path) -> None:
    db = make_db(tmp_path / "a.db", codes={**CODES, "Empty": "   "})
    with pytest.raises(LemurError, match="model 'Empty' has no code"):
        import_sqlite(db)
    # Epochs stored as text or 1.0, accuracies as text or NaN: read as numbers / no result.
    stats = [("AlexNet", "mnist", "1", "0.25"), ("AlexNet", "mnist", 1.0, float("nan"))]
    db = make_db(tmp_path / "b.db", stats=stats, codes={"AlexNet": CODES["AlexNet"]})
    assert summary(import_sqlite(db)) == {("AlexNet", "mnist"): 0.25}


# -- folder -------------------------------------------------------------------------------------
def test_folder_best_first_epoch_accuracy(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ab" / "nn")
    check_records(import_folder(root))
    assert import_folder(root) == import_sqlite(make_db(tmp_path / "ab.nn.db"))
    only = import_folder(root, datasets={"mnist"})
    assert summary(only) == {("AlexNet", "mnist"): 0.93}


def test_folder_flat_layout_with_explicit_keys(tmp_path: Path) -> None:
    """Model files in the root, stat/<anything>/<n>.json with single trial objects."""
    (tmp_path / "AlexNet.py").write_text(CODES["AlexNet"])
    (tmp_path / "ResNet.py").write_text(CODES["ResNet"])
    runs = tmp_path / "stat" / "run-a"
    runs.mkdir(parents=True)
    trials = [
        {"accuracy": 0.3, "nn": "AlexNet", "dataset": "digits", "epoch": 1},
        {"accuracy": 0.6, "nn": "AlexNet", "dataset": "digits", "epoch": 2},
        {"accuracy": 0.4, "nn": "AlexNet", "dataset": "digits", "epoch": 1},
        {"accuracy": 0.2, "nn": "ResNet", "dataset": "digits", "epoch": 3},
    ]
    for i, trial in enumerate(trials):
        (runs / f"{i}.json").write_text(json.dumps(trial))
    assert summary(import_folder(tmp_path)) == {
        ("AlexNet", "digits"): 0.4,
        ("ResNet", "digits"): None,
    }
    # No stats at all: every model once, dataset unknown.
    (tmp_path / "stat").rename(tmp_path / "old-stats")
    assert summary(import_folder(tmp_path)) == {("AlexNet", ""): None, ("ResNet", ""): None}


def test_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(LemurError, match="no LEMUR folder"):
        import_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LemurError, match=r"no model files \(\*\.py\)"):
        import_folder(tmp_path / "empty")

    def folder(name: str, stat_file: str, content: str | bytes) -> Path:
        root = make_folder(tmp_path / name, stats=STATS[:1])
        path = root / "stat" / "train" / stat_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return root

    cases = [
        ("img-classification_cifar-10_acc_AlexNet/2.json", "[{", "malformed stat file"),
        ("img-classification_cifar-10_acc_AlexNet/2.json", b"\xff\xfe[]", "malformed stat"),
        ("img-classification_cifar-10_acc_AlexNet/2.json", "[1]", "trial 0: a trial must be"),
        ("img-classification_cifar-10_acc_AlexNet/2.json", '{"acc": 1}', "no 'accuracy'"),
        ("img-classification_cifar-10_acc_AlexNet/last.json", '{"accuracy": 0.1}', "epoch"),
        ("somewhere/1.json", '{"accuracy": 0.1}', "model and dataset unknown"),
        ("img-classification_cifar-10_acc_AlexNet/1.json", '{"accuracy": 2}', r"\[0, 1\]"),
    ]
    for i, (stat_file, content, message) in enumerate(cases):
        with pytest.raises(LemurError, match=message):
            import_folder(folder(f"case{i}", stat_file, content))

    bad_code = make_folder(tmp_path / "badcode", stats=[])
    (bad_code / "nn" / "Broken.py").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LemurError, match="cannot read model file"):
        import_folder(bad_code)
