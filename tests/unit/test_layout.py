"""nasloop/layout.py: every store key and name, spelled out once here as the store holds them."""

from __future__ import annotations

import pytest

from nasloop import layout


def test_keys_and_names_are_the_stores() -> None:
    run = "r-1"
    assert [
        layout.spec_key(run),
        layout.state_key(run),
        layout.stop_key(run),
        layout.progress_key(run, 3),
        layout.evaluated_key(run, layout.BASELINE, 2),
        layout.candidates_key(run, 3),
        layout.summary_key(run, layout.BASELINE),
        layout.pairs_key(run, 3),
        layout.training_set_key(run, 3),
        layout.adapter_prefix(run, 3),
        layout.run_adapters_prefix(run),
        layout.model_prefix("m"),
        layout.bootstrap_model("tiny"),
        layout.corpus_prefix("seed"),
        layout.namespace_prefix("run-r-1"),
        layout.evaluation_prefix("eval-x-1"),
    ] == [
        "runs/r-1/spec.yaml",
        "runs/r-1/state.json",
        "runs/r-1/stop.json",
        "runs/r-1/cycles/3/progress.json",
        "runs/r-1/baseline/evaluated/2.json",
        "runs/r-1/cycles/3/candidates.jsonl",
        "runs/r-1/baseline/summary.json",
        "runs/r-1/pairs/3.jsonl",
        "runs/r-1/cycles/3/training-set.jsonl",
        "adapters/r-1/3",
        "adapters/r-1",
        "models/m",
        "models/bootstrap-tiny",
        "corpora/seed",
        "novelty/run-r-1",
        "evaluations/eval-x-1",
    ]
    assert [
        layout.adapter_name(run, 3),
        layout.run_namespace(run),
        layout.candidate_id(run, 3, 7),
        layout.baseline_candidate_id(run, 7),
        layout.training_job_id(run, 3),
        layout.cycle_job_name(run, 3),
        layout.cycle_job_name(run, layout.BASELINE),
    ] == ["r-1-c3", "run-r-1", "r-1-c3-7", "r-1-base-7", "r-1-c3-train", "nasloop-cycle-r-1-3",
          "nasloop-cycle-r-1-base"]  # fmt: skip


@pytest.mark.parametrize("run", ["a", "a-c1", "x" * 40])
def test_names_tell_their_run(run: str) -> None:
    assert layout.run_of_adapter_name(layout.adapter_name(run, 12)) == run
    assert layout.run_of_training_job(layout.training_job_id(run, 12)) == run
    assert layout.run_of_adapter_name(layout.training_job_id(run, 12)) is None
    assert layout.run_of_training_job(layout.adapter_name(run, 12)) is None
    assert layout.is_store_model(layout.model_prefix(run))


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 129])
def test_bad_corpus_names_are_refused(name: str) -> None:
    with pytest.raises(layout.InvalidName, match="corpus name"):
        layout.corpus_prefix(name)
