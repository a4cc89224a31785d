"""Import the LEMUR dataset (ABrain's "NN Dataset") as corpus records.

Two inputs are accepted; both give one :class:`CorpusRecord` (source ``"lemur"``) per model and
dataset, whose accuracy is the best accuracy any trial reached at epoch 1 (the first-epoch signal
nasloop uses), or ``None`` when the model has stats for that dataset but none at epoch 1. A model
with no stats at all becomes one record with dataset ``""`` -- unless ``datasets`` is given, in
which case only stats of those datasets count. Stats of models without code are ignored.
Records are sorted by model name, then dataset; ids are ``lemur/<model>/<dataset>`` (``lemur/
<model>`` for dataset ``""``); ``parameter_count`` is 0 (unknown).

**SQLite database** (LEMUR's ``db/ab.nn.db``): table ``nn`` with columns ``name`` and ``code``,
and table ``stat`` with columns ``nn``, ``dataset``, ``epoch`` and ``accuracy``. Other columns and
tables are ignored. The database is opened read-only.

**Folder** (LEMUR's repository layout under ``ab/nn/``, or the same shape anywhere)::

    <root>/nn/<model>.py                       model code (``<root>/*.py`` when there is no nn/)
    <root>/stat/train/<config>/<epoch>.json    stats (``<root>/stat/<config>/...`` when there
                                               is no stat/train/; no stat/ at all: no stats)

``<config>`` is ``<task>_<dataset>_<metric>_<model>`` (LEMUR's naming) or any name when every
trial states its model and dataset. A stat file holds one trial object or a list of them (LEMUR
writes lists); a trial needs ``"accuracy"`` and may carry ``"nn"``, ``"dataset"`` and ``"epoch"``,
which override the directory name and the file name (``<epoch>.json``). Other keys are ignored.

Dataset names are lower-cased and LEMUR's spellings mapped to nasloop's (``cifar-10`` ->
``cifar10``); the ``datasets`` filter accepts either spelling. An accuracy that is null or NaN
counts as no result; one outside [0, 1] or not a number is an error. Anything malformed raises
:class:`LemurError` naming the file, table or row.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nasloop.corpus.records import CorpusRecord, make_record

FIRST_EPOCH = 1
DATASET_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_REQUIRED_COLUMNS = {"nn": ("name", "code"), "stat": ("nn", "dataset", "epoch", "accuracy")}

# (model, raw dataset, raw epoch, raw accuracy, where) -- one trial's result
_Stat = tuple[Any, Any, Any, Any, str]


class LemurError(ValueError):
    """The LEMUR input is missing or malformed."""


def dataset_name(name: str) -> str:
    """nasloop's name for a LEMUR dataset name (lower-cased; ``cifar-10`` -> ``cifar10``)."""
    name = name.strip().lower()
    return DATASET_ALIASES.get(name, name)


# -- SQLite -----------------------------------------------------------------------------------
def import_sqlite(path: str | Path, datasets: set[str] | None = None) -> list[CorpusRecord]:
    """Records from a LEMUR SQLite database (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise LemurError(f"no LEMUR database at {path}")
    with path.open("rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise LemurError(f"{path} is not an SQLite database")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise LemurError(f"cannot open {path}: {e}") from None
    try:
        for table, columns in _REQUIRED_COLUMNS.items():
            _check_columns(conn, path, table, columns)
        codes: dict[str, str] = {}
        for n, (name, code) in enumerate(conn.execute('SELECT "name", "code" FROM "nn"'), 1):
            _add_code(codes, name, code, f"{path}: table nn, row {n}")
        stats = (
            (nn, ds, epoch, acc, f"{path}: table stat, row {n}")
            for n, (nn, ds, epoch, acc) in enumerate(
                conn.execute('SELECT "nn", "dataset", "epoch", "accuracy" FROM "stat"'), 1
            )
        )
        return _build(codes, stats, datasets)
    except sqlite3.Error as e:
        raise LemurError(f"cannot read {path}: {e}") from None
    finally:
        conn.close()


def _check_columns(conn: sqlite3.Connection, path: Path, table: str, needed: Iterable[str]) -> None:
    have = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{table}")')}
    if not have:
        raise LemurError(f"{path} has no table {table!r}")
    missing = [c for c in needed if c not in have]
    if missing:
        raise LemurError(f"{path}: table {table!r} lacks column(s) {', '.join(missing)}")


# -- folder -----------------------------------------------------------------------------------
def import_folder(path: str | Path, datasets: set[str] | None = None) -> list[CorpusRecord]:
    """Records from a LEMUR-style folder of model files and stat JSON files (module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise LemurError(f"no LEMUR folder at {root}")
    code_dir = root / "nn" if (root / "nn").is_dir() else root
    codes: dict[str, str] = {}
    for file in sorted(code_dir.glob("*.py")):
        if file.name == "__init__.py" or file.name.startswith("."):
            continue
        try:
            code = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LemurError(f"cannot read model file {file}: {e}") from None
        _add_code(codes, file.stem, code, str(file))
    if not codes:
        raise LemurError(f"no model files (*.py) in {code_dir}")
    stat_dir = root / "stat" / "train"
    if not stat_dir.is_dir():
        stat_dir = root / "stat"
    stats = _folder_stats(stat_dir) if stat_dir.is_dir() else iter(())
    return _build(codes, stats, datasets)


def _folder_stats(stat_dir: Path) -> Iterator[_Stat]:
    for file in sorted(stat_dir.glob("*/*.json")):
        if file.name.startswith(".") or file.parent.name.startswith("."):
            continue
        parts = file.parent.name.split("_", 3)  # <task>_<dataset>_<metric>_<model>
        path_nn, path_ds = (parts[3], parts[1]) if len(parts) == 4 else (None, None)
        path_epoch = int(file.stem) if file.stem.isdigit() else None
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise LemurError(f"malformed stat file {file}: {e}") from None
        trials = content if isinstance(content, list) else [content]
        for i, trial in enumerate(trials):
            where = f"{file}" + (f", trial {i}" if isinstance(content, list) else "")
            if not isinstance(trial, dict):
                raise LemurError(f"{where}: a trial must be a JSON object")
            if "accuracy" not in trial:
                raise LemurError(f"{where}: no 'accuracy'")
            nn = trial.get("nn", path_nn)
            ds = trial.get("dataset", path_ds)
            epoch = trial.get("epoch", path_epoch)
            if nn is None or ds is None:
                raise LemurError(
                    f"{where}: model and dataset unknown (name the directory "
                    "<task>_<dataset>_<metric>_<model> or give 'nn' and 'dataset')"
                )
            if epoch is None:
                raise LemurError(f"{where}: epoch unknown (name the file <epoch>.json or give it)")
            yield nn, ds, epoch, trial["accuracy"], where


# -- shared -----------------------------------------------------------------------------------
def _add_code(codes: dict[str, str], name: Any, code: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise LemurError(f"{where}: model name must be a non-empty string, got {name!r}")
    if not isinstance(code, str) or not code.strip():
        raise LemurError(f"{where}: model {name!r} has no code")
    if codes.get(name, code) != code:
        raise LemurError(f"{where}: model {name!r} appears twice with different code")
    codes[name] = code


def _epoch(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise LemurError(f"{where}: epoch must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise LemurError(f"{where}: epoch must be an integer, got {value!r}")


def _accuracy(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise LemurError(f"{where}: accuracy must be a number, got {value!r}")
    try:
        acc = float(value)
    except (TypeError, ValueError):
        raise LemurError(f"{where}: accuracy must be a number, got {value!r:.80}") from None
    if math.isnan(acc):
        return None
    if not 0.0 <= acc <= 1.0:
        raise LemurError(
            f"{where}: accuracy {acc!r} is outside [0, 1] (not a classification accuracy? "
            "pass datasets= to import only some datasets)"
        )
    return acc


def _build(
    codes: dict[str, str], stats: Iterable[_Stat], datasets: set[str] | None
) -> list[CorpusRecord]:
    wanted = None if datasets is None else {dataset_name(d) for d in datasets}
    best: dict[tuple[str, str], float | None] = {}
    for nn, raw_ds, raw_epoch, raw_acc, where in stats:
        if not isinstance(raw_ds, str) or not raw_ds.strip():
            raise LemurError(f"{where}: dataset must be a non-empty string, got {raw_ds!r}")
        if not isinstance(nn, str) or not nn:
            raise LemurError(f"{where}: model name must be a non-empty string, got {nn!r}")
        ds = dataset_name(raw_ds)
        if (wanted is not None and ds not in wanted) or nn not in codes:
            continue
        epoch, acc = _epoch(raw_epoch, where), _accuracy(raw_acc, where)
        key = (nn, ds)
        current = best.setdefault(key, None)
        if epoch == FIRST_EPOCH and acc is not None and (current is None or acc > current):
            best[key] = acc
    if wanted is None:
        with_stats = {nn for nn, _ in best}
        for nn in codes:
            if nn not in with_stats:
                best[(nn, "")] = None
    records = []
    for (nn, ds), acc in sorted(best.items()):
        try:
            records.append(
                make_record(
                    codes[nn],
                    "lemur",
                    id=f"lemur/{nn}/{ds}" if ds else f"lemur/{nn}",
                    dataset=ds,
                    accuracy=acc,
                )
            )
        except ValueError as e:
            raise LemurError(f"model {nn!r}, dataset {ds!r}: {e}") from None
    return records
