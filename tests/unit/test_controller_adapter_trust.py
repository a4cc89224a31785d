"""The controller trusts a published adapter only if its manifest is this cycle's training
job's, from this cycle's training set (issue 20: before, any manifest at the prefix was taken,
so whoever could write ``adapters/<run>/<n>/`` chose the run's next adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasloop import layout
from nasloop.artifacts import ADAPTER_FILES
from nasloop.records import TrainingPair, dumps_lines
from nasloop.store import LocalStore, sha256_hex
from services.controller.loop import state as st
from services.controller.loop.cycle import CYCLE_STEPS
from services.controller.loop.runner import Context, CycleError
from services.controller.loop.training import publish
from services.controller.runspec import load_spec

RUN = "r1"
PAIRS = [TrainingPair("Task: design a network.", "```python\nclass Net: pass\n```", "c1", 0.5)]


def cycle_with_a_manifest(tmp_path: Path, **meta: object) -> Context:
    store = LocalStore(tmp_path)
    store.put_bytes(layout.pairs_key(RUN, 1), dumps_lines(PAIRS))
    honest = {
        "kind": "lora-adapter",
        "base_model": "models/tiny",
        "base_model_sha256": "b" * 64,
        "run": RUN,
        "cycle": 1,
        "job_id": layout.training_job_id(RUN, 1),
        "data_sha256": sha256_hex(dumps_lines(PAIRS)),
    }
    prefix = layout.adapter_prefix(RUN, 1)
    files = {name: b"{}" for name in ADAPTER_FILES}
    store.put_artifact(prefix, files, {**honest, **meta})
    spec = load_spec("local").model_copy(update={"name": RUN})
    return Context(RUN, 1, spec, store, services=None, steps=CYCLE_STEPS)  # type: ignore[arg-type]


def test_this_cycles_adapter_is_taken(tmp_path: Path) -> None:
    progress = st.CycleProgress(cycle=1)
    publish(cycle_with_a_manifest(tmp_path), progress)
    assert progress.adapter is not None
    assert progress.adapter.prefix == layout.adapter_prefix(RUN, 1)


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"run": "r2"}, "run"),
        ({"cycle": 2}, "cycle"),
        ({"job_id": "r2-c1-train"}, "job id"),
        ({"data_sha256": "0" * 64}, "data hash"),
        ({"run": "", "job_id": "", "data_sha256": ""}, "run, job id, data hash"),
    ],
)
def test_a_manifest_that_is_not_this_cycles_is_refused(
    tmp_path: Path, meta: dict[str, object], says: str
) -> None:
    progress = st.CycleProgress(cycle=1)
    with pytest.raises(CycleError, match=f"is not this cycle's: its manifest's {says} differ"):
        publish(cycle_with_a_manifest(tmp_path, **meta), progress)
    assert progress.adapter is None
