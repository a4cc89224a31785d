"""The committed stubs in nasloop/v1 must be exactly what `make proto` generates now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "nasloop" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes()
        for p in (ROOT / "nasloop" / "v1").iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert sorted(fresh) == sorted(committed), "stub files differ: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run `make proto` and commit the result"


def test_every_service_is_defined() -> None:
    from nasloop.v1 import (
        controller_pb2,
        evaluator_pb2,
        generator_pb2,
        novelty_pb2,
        trainer_pb2,
    )

    services = {
        name
        for module in (controller_pb2, evaluator_pb2, generator_pb2, novelty_pb2, trainer_pb2)
        for name in module.DESCRIPTOR.services_by_name
    }
    assert services == {"Controller", "CycleStore", "Evaluator", "Generator", "Novelty", "Trainer"}
