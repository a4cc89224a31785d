"""One shape per concept: a candidate is a ``Candidate`` on the wire and a ``CandidateRecord`` in
the controller; an evaluation is an ``Evaluation`` with one converter to and from its message,
from the evaluator's report to ``WatchRun``, every field kept."""

from __future__ import annotations

from dataclasses import fields

from nasloop.records import CandidateRecord, Evaluation
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2
from nasloop.v1 import generator_pb2 as gen
from services.controller.server import event_to_pb
from services.evaluator.report import Report

FULL = Evaluation(
    "STAGE_EVALUATED", "STATUS_OK", {"STAGE_PARSED": 0.5, "STAGE_EVALUATED": 0.25},
    "EXECUTOR_KUBERNETES_JOB", "job-1",
    message="ok", accuracy=0.5, loss=1.25, parameter_count=12, train_seconds=2.0,
    eval_seconds=0.5, peak_memory_bytes=1 << 20,
    trained_samples=1797, optimizer_steps=113, informative=["loss"],
    hyperparameters={"lr": 0.01}, output_tail="hello\n",
    macs=266_400, depth=2, layer_families=["conv", "linear"],
)  # fmt: skip


def test_every_field_of_an_evaluation_survives_its_message_and_its_record() -> None:
    assert all(getattr(FULL, f.name) != getattr(Evaluation(), f.name) for f in fields(FULL))
    message = FULL.to_proto("c", 2)
    assert (message.candidate_id, message.index) == ("c", 2)
    assert Evaluation.from_proto(message) == FULL
    record = CandidateRecord(id="r-c1-0", run="r", cycle=1, index=0, evaluation=FULL)
    assert CandidateRecord.from_json(record.to_json()).evaluation == FULL


def test_a_record_written_before_the_new_fields_still_reads() -> None:
    old = (
        '{"id": "r-c1-0", "run": "r", "cycle": 1, "index": 0, "evaluation": {"accuracy": 0.5, '
        '"eval_seconds": 0.1, "executor": "EXECUTOR_LOCAL_SANDBOX", "executor_ref": "w1", '
        '"last_stage": "STAGE_EVALUATED", "loss": 1.0, "message": "", "parameter_count": 3, '
        '"peak_memory_bytes": 0, "stage_seconds": {"STAGE_EVALUATED": 0.1}, '
        '"status": "STATUS_OK", "train_seconds": 0.2}}'
    )
    e = CandidateRecord.from_json(old).evaluation
    assert e is not None and e.valid and e.accuracy == 0.5 and e.output_tail == ""
    assert e.trained_samples == 0 and e.hyperparameters == {} and e.informative == []
    assert e.macs == 0 and e.depth == 0 and e.layer_families == []


def test_the_evaluators_report_gives_the_one_evaluation_type() -> None:
    r = Report(
        last_stage=common.STAGE_EVALUATED, status=common.STATUS_OK, message="ok",
        parameter_count=12, loss=1.25, train_seconds=2.0, eval_seconds=0.5,
        peak_memory_bytes=1 << 20, trained_samples=1797, optimizer_steps=113,
        timings=[(common.STAGE_PARSED, 0.5), (common.STAGE_EVALUATED, 0.25)],
        hyperparameters={"lr": 0.01}, output_tail="hello\n", accuracy=0.5, informative=["loss"],
        macs=266_400, depth=2, layer_families=["conv", "linear"],
    )  # fmt: skip
    assert r.evaluation(evaluator_pb2.EXECUTOR_KUBERNETES_JOB, "job-1") == FULL


def test_watch_run_candidate_events_carry_every_field() -> None:
    from services.controller.loop.events import Event

    record = CandidateRecord(id="r-c1-4", run="r", cycle=1, index=4, evaluation=FULL)
    message = event_to_pb(Event("r", 1, "generate", candidate=record)).candidate
    assert (message.candidate_id, message.index) == ("r-c1-4", 4)
    assert Evaluation.from_proto(message) == FULL


def test_a_candidate_keeps_the_id_and_provenance_the_generator_gave_it() -> None:
    provenance = common.Provenance(
        source="generated", run="r", cycle=3, model="m", adapter_name="r-c2",
        adapter_sha256="a" * 64, seed=12, prompt_sha256="p" * 64,
    )  # fmt: skip
    answer = gen.GeneratedCandidate(
        index=1,
        candidate=common.Candidate(id="r-c3-7", code="x = 1", raw_text="```python\nx = 1\n```",
                                   provenance=provenance),
        extraction=gen.EXTRACTION_PYTHON_BLOCK, prompt_tokens=5, completion_tokens=9,
        finish_reason="stop", latency_s=0.5,
    )  # fmt: skip
    record = CandidateRecord.from_generated(answer, 7, "the prompt", {"seed": "11"})
    assert (record.id, record.run, record.cycle, record.index) == ("r-c3-7", "r", 3, 7)
    assert (record.extraction, record.sampling, record.prompt) == (
        "python_block",
        {"seed": "11"},
        "the prompt",
    )
    back = record.candidate()
    assert (back.id, back.code, back.raw_text) == ("r-c3-7", "x = 1", answer.candidate.raw_text)
    assert back.provenance == provenance
