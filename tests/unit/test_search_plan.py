"""The search section and a cycle's plan (loop/plan.py) against fake services: parents from
the earlier cycles' archive, deterministic from the cycle's seed, the share of prompts, an empty
archive as the plain loop, a resumed cycle that keeps its saved plan, diff answers' extraction
statuses, and the baseline asked the last cycle's plan.

The real services run an archive cycle in tests/integration/test_loop.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from fake_generator import answer

from nasloop import layout
from nasloop.edits import make_diff
from nasloop.prompts import render_diff, render_prompt
from nasloop.records import CandidateRecord, Evaluation, TrainingPair, dumps_lines, sha256_text
from nasloop.store import LocalStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2, generator_pb2
from services.controller.loop import cycle
from services.controller.loop import state as st
from services.controller.loop.archive import Archive
from services.controller.loop.baseline import BASELINE_STEPS, plan_from
from services.controller.loop.generate import generate
from services.controller.loop.plan import apply_edit, parent_count, plan_prompts
from services.controller.loop.runner import Context, StepList, run_steps
from services.controller.loop.summary import summarize
from services.controller.runspec import (
    SpecError,
    load_spec,
    spec_from_proto,
    spec_to_proto,
)

RUN = "s"
N = 8
PARENT = "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n" + "".join(
    f"        self.l{i} = nn.Linear(4, 4)\n" for i in range(6)
)
CHILD = PARENT.replace("self.l2 = nn.Linear(4, 4)", "self.l2 = nn.Linear(4, 8)")


def spec(*overrides: str):  # type: ignore[no-untyped-def]
    return load_spec(
        overrides=[
            f"name={RUN}", "cycles=2", f"candidates_per_cycle={N}", "novelty.corpus_namespace=",
            "search.strategy=archive", *overrides,
        ]
    )  # fmt: skip


def valid(cycle_: int, index: int, accuracy: float, parameters: int, code: str = PARENT):  # type: ignore[no-untyped-def]
    return CandidateRecord(
        id=layout.candidate_id(RUN, cycle_, index),
        run=RUN,
        cycle=cycle_,
        index=index,
        code=code,
        evaluation=Evaluation(
            status="STATUS_OK", accuracy=accuracy, parameter_count=parameters, depth=5 + index
        ),
    )


def earlier_cycle(store: LocalStore) -> list[CandidateRecord]:
    """Cycle 1's records: four valid ones in different cells, one invalid."""
    found = [valid(1, i, 0.5 + i / 10, 10 ** (3 + i)) for i in range(4)]
    found.append(CandidateRecord(id=layout.candidate_id(RUN, 1, 4), run=RUN, cycle=1, index=4))
    store.put_bytes(layout.candidates_key(RUN, 1), dumps_lines(found))
    return found


def plain_render(task: common.TaskSpec) -> str:
    return render_prompt(task)


class _Call(list[generator_pb2.GeneratedCandidate]):
    def cancel(self) -> None:
        pass


class FakeServices:
    """A generator that answers each prompt (a diff of the parent when asked for one) and an
    evaluator that passes everything with code; records every request."""

    def __init__(self, model: str, fail_after: int | None = None) -> None:
        self.rendered: list[common.TaskSpec] = []
        self.requests: list[generator_pb2.GenerateRequest] = []
        self.lock = threading.Lock()
        self.fail_after, self.evaluated = fail_after, 0
        self.generator = SimpleNamespace(
            model_info=lambda: SimpleNamespace(model=model),
            render_prompt=self._render,
            generate=self._generate,
        )
        self.evaluator = SimpleNamespace(evaluate=self._evaluate)

    def _render(self, task: common.TaskSpec) -> Any:
        self.rendered.append(task)
        return SimpleNamespace(prompt=render_prompt(task))

    def _generate(self, request: generator_pb2.GenerateRequest) -> _Call:
        with self.lock:
            self.requests.append(request)
        out = _Call()
        for i in range(request.n):
            generated = answer(request, i, request.raw_prompt)
            c = generated.candidate
            if "### Diff:" in request.raw_prompt:
                c.raw_text = render_diff(make_diff(PARENT, CHILD))
            else:
                c.code = c.raw_text = f"class Net: pass  # seed {c.provenance.seed}"
            out.append(generated)
        return out

    def _evaluate(self, candidates: list[common.Candidate], protocol: Any) -> Iterator[Any]:
        for c in candidates:
            with self.lock:
                if self.fail_after is not None and self.evaluated >= self.fail_after:
                    raise RuntimeError("the evaluator died")
                self.evaluated += 1
            result = evaluator_pb2.EvaluationResult(candidate_id=c.id)
            result.result.status = common.STATUS_OK if c.code else common.STATUS_NO_CODE
            result.result.last_stage = (
                common.STAGE_EVALUATED if c.code else common.STAGE_UNSPECIFIED
            )
            result.result.metrics.accuracy = 0.5
            yield result


GENERATE_ONLY = StepList(
    steps=(("generate", partial(generate, candidate_id=cycle.candidate_id)),),
    first_progress=cycle.first_progress,
)


def generate_cycle(store: LocalStore, s: Any, services: FakeServices, n: int = 2) -> None:
    run_steps(Context(RUN, n, s, store, services, GENERATE_ONLY), None)  # type: ignore[arg-type]


# -- the spec ------------------------------------------------------------------------------------
def test_the_search_section_defaults_to_the_plain_loop_and_survives_yaml_and_proto() -> None:
    for preset in ("local", "paper"):
        search = load_spec(preset).search
        assert (search.strategy, search.parent_share, search.mode) == ("plain", 0.5, "full")
    s = load_spec(
        overrides=["search.strategy=archive", "search.parent_share=0", "search.mode=diff"]
    )
    assert load_spec(extra=spec_from_proto(spec_to_proto(s))) == s  # a share of 0 is kept
    with pytest.raises(SpecError, match=r"search\.strategy"):
        spec("search.strategy=islands")
    with pytest.raises(SpecError, match=r"search\.parent_share"):
        spec("search.parent_share=1.5")
    with pytest.raises(SpecError, match=r"search\.mode"):
        spec("search.mode=patch")
    with pytest.raises(SpecError, match="unknown key"):
        spec("search.share=0.2")


# -- the plan ------------------------------------------------------------------------------------
def test_the_plan_is_deterministic_renders_each_prompt_once_and_gives_the_share_a_parent(
    local_store: LocalStore,
) -> None:
    archive = Archive.from_records(earlier_cycle(local_store))
    rendered: list[common.TaskSpec] = []

    def render(task: common.TaskSpec) -> str:
        rendered.append(task)
        return render_prompt(task)

    plans = []
    for _ in range(2):
        rendered.clear()
        progress = st.CycleProgress(cycle=2, seed=cycle.cycle_seed(0, 2))
        plan_prompts(progress, spec(), archive, render)
        plans.append(progress)
    a, b = plans
    assert (a.plan, a.prompts) == (b.plan, b.prompts)
    with_parent = [i for i in range(N) if a.prompt_of(i).parent_id]
    assert len(with_parent) == parent_count(0.5, N) == 4
    assert {a.prompt_of(i).parent_id for i in with_parent} <= {e.id for e in archive.elites()}
    assert a.prompt_sha256 == sha256_text(a.prompt) == a.plan[min(set(range(N)) - {*with_parent})]
    assert a.prompt == render_prompt(rendered[0]) and not rendered[0].HasField("parent")
    # each distinct prompt rendered once: the task alone, then one per distinct parent
    parents = [t.parent.id for t in rendered[1:]]
    assert len(parents) == len(set(parents)) == len(a.prompts) - 1
    for sha, p in a.prompts.items():
        assert sha == sha256_text(p.text)
        if p.parent_id:
            assert p.mode == "full" and p.parent_code == PARENT and PARENT.strip() in p.text
    other = st.CycleProgress(cycle=2, seed=a.seed + 1)
    plan_prompts(other, spec(), archive, render)
    assert other.plan != a.plan  # another cycle's seed, other indices or parents

    every = st.CycleProgress(cycle=2, seed=a.seed)
    plan_prompts(every, spec("search.parent_share=1"), archive, render)
    assert all(every.prompt_of(i).parent_id for i in range(N))
    assert every.prompt_sha256 not in every.prompts  # the task-alone prompt is asked of none


@pytest.mark.parametrize(
    "overrides", [(), ("search.strategy=plain",), ("search.parent_share=0.05",)]
)
def test_no_archive_plain_strategy_or_no_share_plans_the_plain_loop(
    local_store: LocalStore, overrides: tuple[str, ...]
) -> None:
    archive = Archive.from_records(earlier_cycle(local_store) if overrides else [])
    progress = st.CycleProgress(cycle=2, seed=7)
    plan_prompts(progress, spec(*overrides), archive, plain_render)
    assert progress.plan == [] and progress.prompts == {}
    assert progress.prompt == render_prompt(load_spec_task()) and progress.prompt_of(3).text == (
        progress.prompt
    )


def load_spec_task() -> common.TaskSpec:
    from services.controller.runspec import task_spec

    return task_spec(spec())


def test_an_old_progress_without_a_plan_loads_as_plain() -> None:
    old = {"cycle": 3, "prompt": "P", "prompt_sha256": sha256_text("P"), "seed": 5, "done": []}
    progress = st.progress_from_json(json.dumps(old).encode())
    assert progress.plan == [] and progress.prompt_of(2) == st.PlannedPrompt("P")
    planned = st.CycleProgress(cycle=2, plan=["x"], prompts={"x": st.PlannedPrompt("T", "p", "c")})
    assert st.progress_from_json(st.to_json(planned)) == planned


# -- the generate step -----------------------------------------------------------------------------
def test_a_cycle_asks_its_planned_prompts_and_records_the_parents(local_store: LocalStore) -> None:
    earlier = earlier_cycle(local_store)
    s = spec()
    services = FakeServices(s.base_model)
    generate_cycle(local_store, s, services)
    progress = st.load_progress(local_store, RUN, 2)
    assert progress is not None and len(progress.plan) == N
    found = st.load_evaluated(local_store, RUN, 2)
    assert sorted(found) == list(range(N))
    valid_ids = {r.id for r in earlier if r.valid}
    for i, r in found.items():
        asked = progress.prompt_of(i)
        assert (r.prompt, r.prompt_sha256) == (asked.text, progress.plan[i])
        assert (r.parent_id, r.mode) == ((asked.parent_id, "full") if asked.parent_id else ("", ""))
        assert r.seed == progress.seed + i and (not r.parent_id or r.parent_id in valid_ids)
    assert sum(1 for r in found.values() if r.parent_id) == 4
    # one call per prompt and contiguous range, each answer's seed its index's
    answered = sorted(
        q.sampling.seed - progress.seed + i for q in services.requests for i in range(q.n)
    )
    assert answered == list(range(N))
    for q in services.requests:
        first = q.sampling.seed - progress.seed
        assert {progress.plan[first + i] for i in range(q.n)} == {sha256_text(q.raw_prompt)}
    assert local_store.exists(layout.archive_key(RUN, 2))


def test_the_plain_strategy_sends_one_prompt_as_before(local_store: LocalStore) -> None:
    earlier_cycle(local_store)
    s = spec("search.strategy=plain")
    services = FakeServices(s.base_model)
    generate_cycle(local_store, s, services)
    assert len(services.rendered) == 1 and len(services.requests) == 1
    assert services.requests[0].n == N
    found = st.load_evaluated(local_store, RUN, 2)
    assert {(r.parent_id, r.mode, r.diff) for r in found.values()} == {("", "", "")}
    assert not local_store.exists(layout.archive_key(RUN, 2))


def test_a_resumed_cycle_keeps_its_saved_plan(local_store: LocalStore) -> None:
    earlier_cycle(local_store)
    s = spec()
    dying = FakeServices(s.base_model, fail_after=3)
    with pytest.raises(Exception, match="died"):
        generate_cycle(local_store, s, dying)
    saved = st.load_progress(local_store, RUN, 2)
    kept = st.load_evaluated(local_store, RUN, 2)
    assert saved is not None and len(saved.plan) == N and 0 < len(kept) < N

    # The archive changes under it (it must not be sampled again): the plan stays.
    local_store.put_bytes(layout.candidates_key(RUN, 1), dumps_lines([valid(1, 9, 0.99, 10**5)]))
    services = FakeServices(s.base_model)
    generate_cycle(local_store, s, services)
    assert services.rendered == []  # nothing rendered again
    again = st.load_progress(local_store, RUN, 2)
    assert again is not None and (again.plan, again.prompts) == (saved.plan, saved.prompts)
    found = st.load_evaluated(local_store, RUN, 2)
    assert [found[i].prompt_sha256 for i in range(N)] == saved.plan
    regenerated = {q.sampling.seed - saved.seed + i for q in services.requests for i in range(q.n)}
    assert regenerated == set(range(N)) - set(kept)


# -- diff answers ----------------------------------------------------------------------------------
def _answer(raw_text: str) -> CandidateRecord:
    return CandidateRecord(id="x", run=RUN, cycle=2, index=0, raw_text=raw_text, code="fenced")


def test_a_diff_answer_is_applied_to_its_parent_or_says_why_not() -> None:
    asked = st.PlannedPrompt("T", "s-c1-0", PARENT, "diff")
    diff = make_diff(PARENT, CHILD)
    applied = _answer("Here:\n" + render_diff(diff))
    apply_edit(applied, asked)
    assert (applied.extraction, applied.code, applied.diff) == ("diff", CHILD, diff)
    assert (applied.parent_id, applied.mode) == ("s-c1-0", "diff")
    applied.prompt = "T"
    assert TrainingPair.from_record(applied).completion == render_diff(diff)

    none = _answer("```python\nclass Net: pass\n```")
    apply_edit(none, asked)
    assert (none.extraction, none.code, none.diff) == ("no_diff", "", "")

    wrong = diff.replace("self.l1 = nn.Linear(4, 4)", "self.l1 = nn.Linear(9, 9)")
    broken = _answer(render_diff(wrong))
    apply_edit(broken, asked)
    assert (broken.extraction, broken.code, broken.diff) == ("diff_not_applied", "", wrong)

    full = _answer("```python\nclass Net: pass\n```")
    apply_edit(full, st.PlannedPrompt("T", "s-c1-0", PARENT, "full"))
    assert (full.extraction, full.code, full.mode) == ("", "fenced", "full")  # untouched
    plain = _answer("x")
    apply_edit(plain, st.PlannedPrompt("T"))
    assert (plain.parent_id, plain.mode, plain.code) == ("", "", "fenced")


def test_diff_answers_without_code_stop_where_a_codeless_answer_stops_and_say_why() -> None:
    no_code = Evaluation(status="STATUS_NO_CODE", last_stage="STAGE_UNSPECIFIED")
    records = []
    for i, extraction in enumerate(["none", "no_diff", "diff_not_applied", "diff_not_applied"]):
        r = _answer("")
        r.index, r.extraction, r.evaluation = i, extraction, no_code
        records.append(r)
    summary = summarize(records, st.CycleProgress(cycle=2), RUN)
    assert summary.stopped == {
        "STAGE_UNSPECIFIED/STATUS_NO_CODE": 1,
        "STAGE_UNSPECIFIED/STATUS_NO_CODE (no_diff)": 1,
        "STAGE_UNSPECIFIED/STATUS_NO_CODE (diff_not_applied)": 2,
    }
    counts = summary.to_proto().stopped
    assert {c.status for c in counts} == {common.STATUS_NO_CODE} and sum(
        c.count for c in counts
    ) == len(records)


def test_a_diff_cycle_records_applied_diffs(local_store: LocalStore) -> None:
    earlier_cycle(local_store)
    s = spec("search.mode=diff", "search.parent_share=1")
    generate_cycle(local_store, s, FakeServices(s.base_model))
    found = st.load_evaluated(local_store, RUN, 2).values()
    assert {(r.mode, r.extraction, r.code) for r in found} == {("diff", "diff", CHILD)}
    assert all(r.evaluation is not None and r.evaluation.valid for r in found)


# -- the baseline ----------------------------------------------------------------------------------
def test_the_baseline_asks_the_last_cycles_plan(local_store: LocalStore) -> None:
    earlier_cycle(local_store)
    s = spec()
    generate_cycle(local_store, s, FakeServices(s.base_model))
    last = st.load_progress(local_store, RUN, 2)
    assert last is not None
    records = [st.load_evaluated(local_store, RUN, 2)[i] for i in range(N)]
    local_store.put_bytes(layout.candidates_key(RUN, 2), dumps_lines(records))
    plan = plan_from(records, N, last)
    assert (plan.prompt_sha256, plan.seed) == (last.prompt_sha256, last.seed)
    with pytest.raises(Exception, match="another prompt or seed"):
        plan_from(records, N)  # without the plan, the records' prompts disagree

    services = FakeServices(s.base_model)
    generate_only = StepList(
        steps=(BASELINE_STEPS.steps[0],), first_progress=BASELINE_STEPS.first_progress
    )
    run_steps(Context(RUN, layout.BASELINE, s, local_store, services, generate_only), None)  # type: ignore[arg-type]
    assert services.rendered == []
    base = st.load_evaluated(local_store, RUN, layout.BASELINE)
    for i, theirs in enumerate(records):
        mine = base[i]
        assert (mine.prompt_sha256, mine.seed, mine.parent_id, mine.mode) == (
            theirs.prompt_sha256, theirs.seed, theirs.parent_id, theirs.mode,
        )  # fmt: skip
        assert mine.adapter_name == ""
