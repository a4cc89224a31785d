"""The baseline against fake services: the last cycle's prompt and seeds exactly, no adapter,
ids of its own, check-only novelty, resume without duplicates; the spec and CLI flags.

The real services run it in tests/integration/test_loop.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fake_generator import answer

from nasloop import layout
from nasloop.artifacts import AdapterMeta
from nasloop.records import CandidateRecord, Evaluation, dumps_lines, sha256_text
from nasloop.store import LocalStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2, generator_pb2, novelty_pb2
from services.cli import main
from services.controller.loop import state as st
from services.controller.loop.baseline import BASELINE_STEPS, plan_from
from services.controller.loop.cycle import CYCLE_STEPS, cycle_seed, run_cycle, steps_of
from services.controller.loop.events import Event
from services.controller.loop.runner import CycleError
from services.controller.runspec import dump_spec, load_spec, spec_from_proto, spec_to_proto

RUN = "r"
PROMPT = "### Task: img-classification on digits\n### Code:\n"
N = 5


def spec(*overrides: str):  # type: ignore[no-untyped-def]
    return load_spec(
        overrides=[
            f"name={RUN}", "cycles=2", f"candidates_per_cycle={N}", "novelty.corpus_namespace=",
            *overrides,
        ]
    )  # fmt: skip


def last_cycle(seed: int = cycle_seed(0, 2)) -> list[CandidateRecord]:
    return [
        CandidateRecord(
            id=layout.candidate_id(RUN, 2, i),
            run=RUN,
            cycle=2,
            index=i,
            prompt=PROMPT,
            prompt_sha256=sha256_text(PROMPT),
            seed=seed + i,
            adapter_name="r-c1",
        )
        for i in range(N)
    ]


class _Call(list):  # type: ignore[type-arg]
    def cancel(self) -> None:
        pass


class FakeServices:
    """Generator, evaluator and novelty enough for a baseline; records every request."""

    def __init__(self, model: str, fail_after: int | None = None) -> None:
        self.requests: list[generator_pb2.GenerateRequest] = []
        self.checked: list[tuple[list[str], list[str]]] = []
        self.fail_after = fail_after  # evaluations before the evaluator "dies"
        self.evaluated = 0
        self.generator = SimpleNamespace(
            model_info=lambda: SimpleNamespace(model=model), generate=self._generate
        )
        self.evaluator = SimpleNamespace(evaluate=self._evaluate)
        self.novelty = SimpleNamespace(
            ensure_namespace=lambda name, params: novelty_pb2.NamespaceInfo(name=name),
            batch_check=self._check,
            batch_check_and_add=self._refused,
        )

    def _generate(self, request: generator_pb2.GenerateRequest) -> _Call:
        self.requests.append(request)
        out = _Call()
        for i in range(request.n):
            generated = answer(request, i, PROMPT)
            generated.candidate.code = f"class Net: pass  # seed {request.sampling.seed + i}"
            generated.candidate.provenance.adapter_name = request.adapter
            out.append(generated)
        return out

    def _evaluate(self, candidates: list[common.Candidate], protocol: Any) -> Iterator[Any]:
        for c in candidates:
            if self.fail_after is not None and self.evaluated >= self.fail_after:
                raise RuntimeError("the evaluator died")
            self.evaluated += 1
            result = evaluator_pb2.EvaluationResult(candidate_id=c.id)
            result.result.status = common.STATUS_OK
            result.result.last_stage = common.STAGE_EVALUATED
            result.result.metrics.accuracy = 0.5
            yield result

    def _check(
        self, namespaces: list[str], candidates: list[common.Candidate]
    ) -> list[novelty_pb2.CheckResult]:
        self.checked.append((list(namespaces), [c.code for c in candidates]))
        return [novelty_pb2.CheckResult(novel=True, max_similarity=0.1) for _ in candidates]

    def _refused(self, *args: Any) -> None:
        raise AssertionError("the baseline must not add to any namespace")


def test_plan_is_the_last_cycles_prompt_and_seeds() -> None:
    plan = plan_from(list(reversed(last_cycle(seed=77))), N)
    assert (plan.prompt, plan.prompt_sha256, plan.seed) == (PROMPT, sha256_text(PROMPT), 77)
    other = last_cycle()
    other[3].seed += 1
    with pytest.raises(CycleError, match="another prompt or seed"):
        plan_from(other, N)
    with pytest.raises(CycleError, match="not one for each"):
        plan_from(last_cycle()[:-1], N)


def test_baseline_answers_the_last_cycles_prompt_and_seeds_without_an_adapter(
    local_store: LocalStore,
) -> None:
    s = spec()
    previous = last_cycle()
    local_store.put_bytes(layout.candidates_key(RUN, 2), dumps_lines(previous))
    services = FakeServices(s.base_model)
    events: list[Any] = []
    adapter = AdapterMeta(name="r-c2", prefix="adapters/r/2", sha256="a" * 64, cycle=2)  # not used
    summary = run_cycle(RUN, layout.BASELINE, s, local_store, services, adapter, events.append)
    assert [r.adapter for r in services.requests] == [""]
    assert services.requests[0].sampling.seed == previous[0].seed

    found = st.load_candidates(local_store, RUN, layout.BASELINE)
    assert local_store.exists(layout.baseline_candidates_key(RUN))
    assert [r.id for r in found] == [f"{RUN}-base-{i}" for i in range(N)]
    assert not {r.id for r in found} & {
        layout.candidate_id(RUN, c, i) for c in (1, 2) for i in range(N)
    }
    for mine, theirs in zip(found, previous, strict=True):
        assert (mine.prompt, mine.prompt_sha256, mine.seed) == (
            theirs.prompt, theirs.prompt_sha256, theirs.seed,
        )  # fmt: skip
        assert mine.cycle == layout.BASELINE and mine.adapter_name == ""
        assert mine.evaluation is not None and mine.novelty is not None
        assert mine.novelty.novel and not mine.novelty.added and not mine.selected
    assert services.checked == [([layout.run_namespace(RUN)], [r.code for r in found])]
    assert summary.cycle == layout.BASELINE and summary.generated == N and summary.novel == N
    assert summary.to_proto().candidates.key == layout.baseline_candidates_key(RUN)
    assert {e.step for e in events} == {"baseline"}
    assert events[-1].summary is summary and events[-1].message == "baseline done"

    # Done: running it again generates nothing.
    again = FakeServices(s.base_model)
    run_cycle(RUN, layout.BASELINE, s, local_store, again, None)
    assert again.requests == [] and again.evaluated == 0


def test_a_killed_baseline_resumes_with_the_missing_answers_only(local_store: LocalStore) -> None:
    s = spec()
    local_store.put_bytes(layout.candidates_key(RUN, 2), dumps_lines(last_cycle()))
    dying = FakeServices(s.base_model, fail_after=2)
    with pytest.raises(RuntimeError, match="died"):  # as good as a crash
        run_cycle(RUN, layout.BASELINE, s, local_store, dying, None)
    kept = st.load_evaluated(local_store, RUN, layout.BASELINE)
    assert 0 < len(kept) < N

    services = FakeServices(s.base_model)
    run_cycle(RUN, layout.BASELINE, s, local_store, services, None)
    regenerated = {r.sampling.seed + i for r in services.requests for i in range(r.n)}
    assert regenerated == {cycle_seed(0, 2) + i for i in range(N) if i not in kept}
    found = st.load_candidates(local_store, RUN, layout.BASELINE)
    assert [r.seed for r in found] == [cycle_seed(0, 2) + i for i in range(N)]


def test_baseline_needs_the_last_cycles_records(local_store: LocalStore) -> None:
    with pytest.raises(CycleError, match="cycle 2's records"):
        run_cycle(RUN, layout.BASELINE, spec(), local_store, FakeServices("m"), None)


def test_a_cycle_and_the_baseline_are_two_lists_of_the_steps_progress_names() -> None:
    assert steps_of(layout.BASELINE) is BASELINE_STEPS and steps_of(1) is CYCLE_STEPS
    # the names progress.json records: a run written before must resume under the same ones
    cycle = ("generate", "novelty", "select", "fine_tune", "publish", "hot_load", "summary")
    baseline = ("generate", "novelty", "records", "summary")
    assert CYCLE_STEPS.names == cycle and BASELINE_STEPS.names == baseline
    assert {BASELINE_STEPS.phase_of(s) for s in baseline} == {"baseline"}
    assert [CYCLE_STEPS.phase_of(s) for s in cycle] == list(cycle)


def test_ids_and_keys_never_collide_with_a_cycles() -> None:
    assert layout.baseline_candidate_id(RUN, 3) == "r-base-3"
    assert layout.baseline_candidate_id(RUN, 3) not in {layout.candidate_id(RUN, 1, 3)}
    assert layout.candidates_key(RUN, layout.BASELINE) == "runs/r/baseline/candidates.jsonl"
    assert st.evaluated_key(RUN, layout.BASELINE, 2) == "runs/r/baseline/evaluated/2.json"
    assert st.progress_key(RUN, layout.BASELINE) == "runs/r/baseline/progress.json"
    with pytest.raises(layout.InvalidName):
        layout.cycle_prefix(RUN, layout.BASELINE)  # never a cycle


def test_the_spec_flag_defaults_on_and_survives_yaml_and_proto() -> None:
    assert load_spec().baseline and load_spec("paper").baseline
    on, off = load_spec(overrides=["cycles=2"]), load_spec(overrides=["baseline=false"])
    assert off.baseline is False
    assert load_spec(spec_yaml=dump_spec(off)) == off
    assert load_spec(extra=spec_from_proto(spec_to_proto(off))) == off  # false is not "unset"
    assert load_spec(extra=spec_from_proto(spec_to_proto(on))) == on


def test_no_baseline_is_sugar_for_set_baseline_false(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.controller.cli import commands

    seen: dict[str, Any] = {}
    monkeypatch.setattr(commands, "run", lambda args: seen.setdefault("sets", args.sets) and 0)
    main(["run", "--no-baseline", "--set", "cycles=1"])
    assert seen["sets"] == ["baseline=false", "cycles=1"]
    assert load_spec(overrides=seen["sets"]).baseline is False
    with pytest.raises(SystemExit):  # --cycle or --baseline, not both
        main(["cycle", "--run", RUN, "--cycle", "1", "--baseline"])


def test_progress_shows_the_baseline() -> None:
    import io

    from nasloop.v1 import controller_pb2 as pb
    from services.controller.cli.progress import Progress
    from services.controller.loop.summary import CycleSummary
    from services.controller.server import event_to_pb

    out = io.StringIO()
    progress = Progress(out)
    record = last_cycle()[0]
    record.evaluation = Evaluation(last_stage="STAGE_EVALUATED", status="STATUS_OK")
    counts = {"total": 2, "generated": 1, "evaluated": 1}
    event = event_to_pb(Event(RUN, layout.BASELINE, "baseline", candidate=record, counts=counts))
    assert event.phase == pb.CYCLE_PHASE_BASELINE
    progress(event)
    summary = CycleSummary(RUN, layout.BASELINE, generated=2, valid=1, valid_rate=0.5)
    progress(event_to_pb(Event(RUN, 0, "baseline", "baseline done", summary=summary)))
    text = out.getvalue()
    assert "baseline (base model, no adapter)" in text and "valid=1" in text
    assert "baseline (base model, no adapter): 2 generated, 1 valid (50.0 %)" in text
