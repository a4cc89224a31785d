"""The controller's plain parts: records, adapter manifests, selection, summaries, names."""

from __future__ import annotations

import json

import pytest

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.lora import LoraSettings
from nasloop.records import (
    CandidateRecord,
    Evaluation,
    NoveltyVerdict,
    RecordError,
    TrainingPair,
    dumps_lines,
    loads_pairs,
    loads_records,
    sha256_text,
)
from nasloop.store import LocalStore
from services.controller.loop.events import Event
from services.controller.loop.generate import _ranges
from services.controller.loop.runner import Context, StepList, Stopped, run_steps
from services.controller.loop.selection import select
from services.controller.loop.state import CycleProgress, load_progress
from services.controller.loop.summary import summarize
from services.controller.runspec import load_spec

PROMPT = "### Task: img-classification on digits\n### Code:\n"


def record(i: int, status: str = "STATUS_OK", acc: float = 0.5, novel: bool = True, **kw):  # type: ignore[no-untyped-def]
    return CandidateRecord(
        id=layout.candidate_id("r", 1, i),
        run="r",
        cycle=1,
        index=i,
        prompt=PROMPT,
        prompt_sha256=kw.pop("prompt_sha256", sha256_text(PROMPT)),
        code=kw.pop("code", f"class Net: pass  # {i}"),
        evaluation=Evaluation(last_stage="STAGE_EVALUATED", status=status, accuracy=acc),
        novelty=NoveltyVerdict(novel=novel, added=novel, max_similarity=0.9, nearest_id="x"),
        **kw,
    )


def test_candidate_records_round_trip_and_ignore_unknown_fields() -> None:
    r = record(3, seed=7, sampling={"temperature": 0.8})
    back = CandidateRecord.from_json(r.to_json())
    assert back == r and isinstance(back.evaluation, Evaluation)
    data = json.loads(r.to_json())
    data["from_a_newer_version"] = 1
    data["evaluation"]["also_new"] = [1, 2]
    assert CandidateRecord.from_json(json.dumps(data)) == r
    assert loads_records(dumps_lines([r, record(4)]))[1].index == 4
    with pytest.raises(RecordError, match="line 2"):
        loads_records(dumps_lines([r]) + b"[1, 2]\n")
    with pytest.raises(RecordError, match="missing"):
        CandidateRecord.from_json('{"id": "x"}')


def test_evaluation_converts_to_and_from_its_proto() -> None:
    e = Evaluation(
        last_stage="STAGE_TRAINED", status="STATUS_NON_FINITE_LOSS", message="nan",
        parameter_count=12, stage_seconds={"STAGE_PARSED": 0.5}, executor="EXECUTOR_LOCAL_SANDBOX",
    )  # fmt: skip
    assert Evaluation.from_proto(e.to_proto("c", 2)) == e


def test_a_pair_is_the_prompt_as_generated_and_the_code_as_one_python_block() -> None:
    r = record(0, code="\nimport torch\n")
    pair = TrainingPair.from_record(r)
    assert pair.prompt == PROMPT and pair.completion == "```python\nimport torch\n```"
    assert loads_pairs(dumps_lines([pair])) == [pair]
    with pytest.raises(RecordError, match="does not match its hash"):
        TrainingPair.from_record(record(0, prompt_sha256="0" * 64))
    with pytest.raises(RecordError, match="no prompt or no code"):
        TrainingPair.from_record(record(0, code="  "))
    with pytest.raises(RecordError, match="line 1: the completion is empty"):
        loads_pairs(b'{"prompt": "p", "completion": " "}\n')
    # The trainer's format before this record existed still reads.
    assert loads_pairs(b'{"prompt": "p", "completion": "c"}\n') == [TrainingPair("p", "c")]


def test_paper_selection_tops_up_to_15_and_says_why_for_every_candidate() -> None:
    policy = load_spec("paper").selection
    rs = [record(i, acc=0.45) for i in range(3)]  # 3 above 0.40
    rs += [record(10 + i, acc=0.36 + i / 1000) for i in range(20)]  # top-up candidates
    rs += [record(40, acc=0.9, novel=False), record(41, status="STATUS_INIT_EXCEPTION", acc=0)]
    chosen = select(rs, policy)
    assert len(chosen) == 15 and [r.index for r in chosen[:3]] == [0, 1, 2]
    assert all(r.selected for r in chosen) and sum(r.selected for r in rs) == 15
    assert chosen[3].index == 29  # the best of the top-up ones next
    by_index = {r.index: r for r in rs}
    assert by_index[0].selection_reason == "novel, accuracy ≥ 0.4"
    assert by_index[29].selection_reason.startswith("top-up")
    assert by_index[10].selection_reason == "novel, accuracy below the thresholds"
    assert by_index[40].selection_reason.startswith("not novel: 0.90 similar to x")
    assert by_index[41].selection_reason == "invalid: STATUS_INIT_EXCEPTION"


def test_selection_cap() -> None:
    policy = load_spec("local", overrides=["selection.max_per_cycle=2"]).selection
    rs = [record(i, acc=0.9 - i / 100) for i in range(5)]
    assert [r.index for r in select(rs, policy)] == [0, 1]
    assert rs[2].selection_reason.startswith("cap")


def test_summary_counts() -> None:
    rs = [record(0, acc=0.5), record(1, acc=0.3, novel=False, code="same")]
    rs += [record(2, status="STATUS_SYNTAX_ERROR", acc=0, code="same")]
    rs[2].evaluation.last_stage = "STAGE_EXTRACTED"  # type: ignore[union-attr]
    rs[0].selected = True
    progress = CycleProgress(cycle=1, seconds={"generate": 3.0}, wall_seconds=4)
    s = summarize(rs, progress, "r", threshold=0.3)
    assert (s.generated, s.valid, s.novel, s.selected, s.distinct) == (3, 2, 1, 1, 2)
    assert s.valid_rate == pytest.approx(2 / 3) and s.mean_accuracy == pytest.approx(0.4)
    assert s.best_accuracy == 0.5 and s.share_above_040 == 0.5
    assert (s.threshold, s.share_above_threshold, s.novel_good) == (0.3, 1.0, 1)
    assert s.stopped == {"STAGE_EXTRACTED/STATUS_SYNTAX_ERROR": 1}
    proto = s.to_proto()
    assert proto.stopped[0].count == 1 and proto.step_seconds["generate"] == 3.0
    assert (proto.selection_threshold, proto.share_above_threshold, proto.novel_good) == (
        pytest.approx(0.3), 1.0, 1,
    )  # fmt: skip


def test_contiguous_ranges_of_missing_answers() -> None:
    assert list(_ranges([5, 0, 1, 2, 7, 8])) == [(0, 3), (5, 1), (7, 2)]
    assert list(_ranges([])) == []


def test_the_runner_runs_the_steps_not_done_and_stops_between_steps(
    local_store: LocalStore,
) -> None:
    """Each step runs once, its progress saved after it and announced; a second run skips the
    steps done; a stop after a step leaves the next one for the resume."""
    ran: list[str] = []

    def step(ctx: Context, progress: CycleProgress) -> None:
        ran.append(ctx.steps.names[len(progress.done)])
        if ran[-1] == "a":
            ctx.calls.stop.set()  # after this step

    steps = StepList(
        steps=(("a", step), ("b", step), ("summary", step)),
        first_progress=lambda ctx, previous: CycleProgress(cycle=ctx.cycle, seed=7),
    )
    events: list[Event] = []
    spec = load_spec(overrides=["name=r"])
    ctx = Context("r", 1, spec, local_store, services=None, steps=steps, emit=events.append)  # type: ignore[arg-type]
    with pytest.raises(Stopped, match="stopped before b"):
        run_steps(ctx, None)
    saved = load_progress(local_store, "r", 1)
    assert saved is not None and saved.done == ["a"] and saved.seed == 7
    ctx = Context("r", 1, spec, local_store, services=None, steps=steps, emit=events.append)  # type: ignore[arg-type]
    run_steps(ctx, None)
    run_steps(ctx, None)  # all done: nothing runs
    assert ran == ["a", "b", "summary"]
    assert [e.message for e in events] == [
        "a started", "a done", "b started", "b done", "summary started",
    ]  # fmt: skip
    saved = load_progress(local_store, "r", 1)
    assert saved is not None and saved.done == ["a", "b", "summary"]
    assert set(saved.seconds) == {"a", "b", "summary"} and saved.wall_seconds > 0


def test_adapter_meta_round_trips_through_a_manifest() -> None:
    meta = AdapterMeta(
        base_model="models/m", base_model_sha256="b" * 64,
        lora=LoraSettings(8, 16.0, 0.05, ("q_proj", "v_proj")), run="r", cycle=2,
    )  # fmt: skip
    files = {"adapter_model.safetensors": {}, "adapter_config.json": {}}
    manifest = {"files": files, "meta": meta.to_meta()}
    assert AdapterMeta.from_manifest(json.loads(json.dumps(manifest))) == meta
    ref = meta.to_ref()
    assert (ref.rank, ref.cycle, ref.base_model_sha256) == (8, 2, "b" * 64)
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        AdapterMeta.from_manifest({"files": files, "meta": {"kind": "bootstrap-lm"}})
    with pytest.raises(ValueError, match="lacks adapter_config"):
        AdapterMeta.from_manifest({**manifest, "files": {"adapter_model.safetensors": {}}})
    with pytest.raises(ValueError, match="malformed"):
        bad = {**meta.to_meta(), "lora": {"r": "eight"}}
        AdapterMeta.from_manifest({"files": files, "meta": bad})


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a" * 41, "a/b"])
def test_bad_run_names(name: str) -> None:
    with pytest.raises(layout.InvalidName):
        layout.check_run_name(name)


def test_names_derived_from_a_run() -> None:
    run = "a" * 40
    assert layout.adapter_name(run, 12) == f"{run}-c12"
    assert len(layout.run_namespace(run)) <= 63  # the novelty service's namespace limit
    assert layout.candidates_key("r", 3) == "runs/r/cycles/3/candidates.jsonl"
    with pytest.raises(layout.InvalidName):
        layout.adapter_prefix("r", 0)


def test_progress_draws_a_bar_per_step_and_a_line_per_cycle() -> None:
    import io

    from nasloop.v1 import common_pb2 as common
    from nasloop.v1 import controller_pb2 as pb
    from services.controller.cli.progress import Progress
    from services.controller.loop.summary import CycleSummary

    out = io.StringIO()
    progress = Progress(out)
    counts = {"total": 2, "generated": 2, "evaluated": 1}
    event = pb.CycleEvent(run="r", cycle=1, phase=pb.CYCLE_PHASE_GENERATE, counts=counts)
    event.candidate.result.status = common.STATUS_OK
    progress(event)
    queued = pb.CycleEvent(run="r", cycle=1, phase=pb.CYCLE_PHASE_FINE_TUNE)
    queued.training.job_id = "j"  # no total yet: no bar
    progress(queued)
    done = pb.CycleEvent(run="r", cycle=1, phase=pb.CYCLE_PHASE_DONE)
    done.summary.CopyFrom(CycleSummary("r", 1, generated=2, valid=1, valid_rate=0.5).to_proto())
    progress(done)
    text = out.getvalue()
    assert "cycle 1 generate+evaluate" in text and "valid=1" in text
    assert "fine-tune" not in text
    assert "cycle 1: 2 generated, 1 valid (50.0 %)" in text


def test_cycle_seeds_of_different_runs_share_no_answer() -> None:
    """Answer i of cycle n samples with cycle_seed(seed, n) + i: deterministic, below the
    generator's 2**63, and the seed ranges of runs with seeds 0..9 over 20 cycles of 4096
    answers never overlap (seed + n·10⁶ made seeds 0 and 1 share 47 of 48 answers)."""
    import itertools

    from services.controller.loop.cycle import cycle_seed

    assert cycle_seed(0, 1) == cycle_seed(0, 1)
    starts = sorted(cycle_seed(s, n) for s in range(10) for n in range(1, 21))
    assert len(set(starts)) == 200 and starts[-1] + 4096 < 2**63
    assert all(b - a >= 4096 for a, b in itertools.pairwise(starts))
