"""The controller trusts a published adapter only if its manifest is this cycle's training
job's, from this cycle's training set (issue 20: before, any manifest at the prefix was taken,
so whoever could write ``adapters/<run>/<n>/`` chose the run's next adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasloop import layout
from nasloop.artifacts import ADAPTER_FILES, job_adapter
from nasloop.records import TrainingPair, dumps_lines
from nasloop.store import LocalStore, sha256_hex
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import trainer_pb2
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


def test_the_jobs_adapter_is_taken_as_the_trainer_returned_it(tmp_path: Path) -> None:
    """The fine-tune step keeps the adapter its job returned (under the name it asked for);
    publish records it without reading the manifest again, checked the same way."""
    ctx = cycle_with_a_manifest(tmp_path)
    ctx.store.delete(f"{layout.adapter_prefix(RUN, 1)}/manifest.json")  # not read
    ref = common.AdapterRef(
        name=layout.adapter_name(RUN, 1), prefix=layout.adapter_prefix(RUN, 1), sha256="a" * 64,
        rank=8, run=RUN, cycle=1, base_model="models/tiny", base_model_sha256="b" * 64,
    )  # fmt: skip
    job = trainer_pb2.Job(id=layout.training_job_id(RUN, 1), adapter=ref)
    job.data_sha256 = sha256_hex(dumps_lines(PAIRS))
    ctx.trained = job_adapter(job)
    progress = st.CycleProgress(cycle=1)
    publish(ctx, progress)
    assert progress.adapter is not None and progress.adapter.to_ref() == ref
    job.id = "r2-c1-train"
    ctx.trained = job_adapter(job)
    with pytest.raises(CycleError, match="job id differ"):
        publish(ctx, st.CycleProgress(cycle=1))


def test_after_a_crash_the_manifests_adapter_gets_the_name_asked_for(tmp_path: Path) -> None:
    progress = st.CycleProgress(cycle=1)
    ctx = cycle_with_a_manifest(tmp_path)
    publish(ctx, progress)
    assert progress.adapter is not None and progress.adapter.name == layout.adapter_name(RUN, 1)
    assert progress.adapter.sha256 == ctx.store.manifest_sha256(layout.adapter_prefix(RUN, 1))
