"""The local executor's modes: strict needs bubblewrap; weak runs without it, loudly."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from candidates import GOOD_NET, protocol

from nasloop.config import EvaluatorConfig
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from services.evaluator.datasets import DatasetCache
from services.evaluator.pool import LocalExecutor
from services.evaluator.sandbox import SandboxError, bwrap_command
from services.evaluator.task import Task

PROTOCOL = protocol(seed=1, train_subset=64, test_subset=32, time_limit_s=60)


def test_strict_mode_without_bubblewrap_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    with pytest.raises(SandboxError, match="bubblewrap"):
        LocalExecutor(EvaluatorConfig(sandbox="strict"), tmp_path)


def test_weak_mode_warns_and_still_evaluates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    datasets = DatasetCache(tmp_path)
    prepared = datasets.get("digits")
    with caplog.at_level(logging.WARNING, logger="nasloop.evaluator.pool"):
        ex = LocalExecutor(EvaluatorConfig(workers=1, sandbox="weak"), datasets.data_dir)
    assert "SANDBOX IS WEAK" in caplog.text
    assert ex.kind == pb.EXECUTOR_LOCAL_UNSANDBOXED
    ex.start()
    try:
        report, ref = ex.run(Task("c", GOOD_NET, PROTOCOL), prepared, threading.Event())
    finally:
        ex.close()
    assert report.status == common.STATUS_OK, report.message
    assert report.outputs is not None and report.outputs.shape == (32, 10)
    assert ref == "w0"


def test_bubblewrap_view_is_minimal(tmp_path: Path) -> None:
    (tmp_path / "sandbox").mkdir()
    args = bwrap_command("/usr/bin/bwrap", tmp_path, 1 << 20)
    binds = [args[i + 1] for i, a in enumerate(args) if a == "--ro-bind"]
    assert "/" not in binds and not any(b.startswith("/home") for b in binds)
    assert str(tmp_path / "sandbox") in [str(Path(b)) for b in binds]
    assert str(tmp_path) not in binds  # the test labels live beside, not inside, the view
    for flag in ("--unshare-net", "--unshare-pid", "--clearenv", "--new-session"):
        assert flag in args
