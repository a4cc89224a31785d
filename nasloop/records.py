"""The records every part of the loop shares: a candidate's life, and a training pair.

A :class:`CandidateRecord` is one generated answer from its prompt to its selection (the model
for it is OpenEvolve's ``Program``): what was asked, what the model wrote, how the evaluator
judged it, whether it was novel, and whether it became a training pair. A
:class:`TrainingPair` is the prompt the generator was given, byte for byte, and the answer the
model is taught to write. Both are JSON lines; readers ignore fields they do not know, so
records written by a newer version stay readable.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from nasloop.messages import message_from
from nasloop.prompts import render_answer, render_diff
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2, generator_pb2

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")  # a record type


class RecordError(ValueError):
    """A line that is not a record of the expected kind."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(kw_only=True)
class Measurements:
    """What an evaluation measured of a candidate: the fields an :class:`Evaluation` and the
    evaluator's working report (``services.evaluator.report.Report``) share, by keyword."""

    message: str = ""
    accuracy: float = 0.0
    loss: float = 0.0
    parameter_count: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    peak_memory_bytes: int = 0
    trained_samples: int = 0
    optimizer_steps: int = 0
    # Metric names the sandbox reported and the evaluator could not recompute.
    informative: list[str] = field(default_factory=list)
    # The prm values the candidate received.
    hyperparameters: dict[str, float] = field(default_factory=dict)
    # Tail of the candidate's output, for debugging (bounded by the evaluator).
    output_tail: str = ""
    # Descriptors of the network (common.proto CandidateMetrics): multiply-adds of one forward
    # pass, depth, layer families; 0 / empty where not measured (and in older records).
    macs: int = 0
    depth: int = 0
    layer_families: list[str] = field(default_factory=list)


@dataclass
class Evaluation(Measurements):
    """The evaluator's verdict on one candidate: the one in-process shape of an evaluation.

    The evaluator makes it (``services.evaluator.report.Report.evaluation``), sends it as an
    ``EvaluationResult`` (:meth:`to_proto`), the controller reads it back (:meth:`from_proto`),
    keeps it in the candidate's record and sends it again in ``WatchRun``'s candidate events:
    every field of the message survives each step. Enums are their proto names (``"STATUS_OK"``),
    as the records store them. ``stage_seconds`` has one entry per stage (a stage timed twice
    keeps its last time), in the order measured. The message's ``candidate_id`` and ``index``
    say which candidate of a request it is: they belong to the call, not to the verdict, and
    are given to :meth:`to_proto`. The :class:`Measurements` fields are given by keyword.
    """

    last_stage: str = "STAGE_UNSPECIFIED"
    status: str = "STATUS_UNSPECIFIED"
    stage_seconds: dict[str, float] = field(default_factory=dict)
    executor: str = ""
    executor_ref: str = ""

    @property
    def valid(self) -> bool:
        """Reached STAGE_EVALUATED above the failure floor (DESIGN.md's valid rate)."""
        return self.status == "STATUS_OK"

    @classmethod
    def from_proto(cls, r: evaluator_pb2.EvaluationResult) -> Evaluation:
        v, m = r.result, r.result.metrics
        return cls(
            last_stage=common.Stage.Name(v.last_stage),
            status=common.Status.Name(v.status),
            message=v.message,
            accuracy=m.accuracy,
            loss=m.loss,
            parameter_count=m.parameter_count,
            train_seconds=m.train_seconds,
            eval_seconds=m.eval_seconds,
            peak_memory_bytes=m.peak_memory_bytes,
            stage_seconds={common.Stage.Name(t.stage): t.seconds for t in v.timings},
            executor=evaluator_pb2.Executor.Name(r.executor),
            executor_ref=r.executor_ref,
            trained_samples=m.trained_samples,
            optimizer_steps=m.optimizer_steps,
            informative=list(m.informative),
            hyperparameters=dict(v.hyperparameters),
            output_tail=r.output_tail,
            macs=m.macs,
            depth=m.depth,
            layer_families=list(m.layer_families),
        )

    def to_proto(self, candidate_id: str = "", index: int = 0) -> evaluator_pb2.EvaluationResult:
        return evaluator_pb2.EvaluationResult(
            candidate_id=candidate_id,
            index=index,
            result=common.ValidationResult(
                last_stage=self.last_stage,
                status=self.status,
                message=self.message,
                metrics=message_from(common.CandidateMetrics, self),
                timings=[
                    common.StageTiming(stage=s, seconds=t) for s, t in self.stage_seconds.items()
                ],
                hyperparameters=self.hyperparameters,
            ),
            executor=self.executor or "EXECUTOR_UNSPECIFIED",
            executor_ref=self.executor_ref,
            output_tail=self.output_tail,
        )


@dataclass
class NoveltyVerdict:
    novel: bool = False
    added: bool = False
    max_similarity: float = 0.0
    nearest_id: str = ""
    nearest_namespace: str = ""


@dataclass
class CandidateRecord:
    """One candidate, from prompt to selection (``runs/<run>/cycles/<n>/candidates.jsonl``)."""

    id: str
    run: str
    cycle: int
    index: int
    prompt: str = ""
    prompt_sha256: str = ""
    adapter_name: str = ""  # "" = the base model
    adapter_sha256: str = ""
    model: str = ""
    seed: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    raw_text: str = ""
    code: str = ""
    # How the code was found: "python", "fenced" or "none" (the generator's); for a "diff" answer
    # the controller's: "diff" (applied to the parent), "no_diff" or "diff_not_applied" (no code)
    extraction: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    generation_seconds: float = 0.0
    # search.strategy "archive": the parent shown in the prompt ("" = none) and how the answer
    # edits it ("full" or "diff"; "" = no parent); a diff answer's diff, applied to make ``code``.
    parent_id: str = ""
    mode: str = ""
    diff: str = ""
    evaluation: Evaluation | None = None
    novelty: NoveltyVerdict | None = None
    selected: bool = False
    selection_reason: str = ""

    @property
    def valid(self) -> bool:
        return self.evaluation is not None and self.evaluation.valid

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy if self.evaluation is not None else 0.0

    @classmethod
    def from_generated(
        cls,
        answer: generator_pb2.GeneratedCandidate,
        index: int,
        prompt: str,
        sampling: dict[str, Any],
    ) -> CandidateRecord:
        """The record of one answer of a Generate call: its id, run, cycle and provenance as
        the generator gave them (the id is the one the controller asked for), ``index`` its
        position in the cycle, ``prompt`` the text its ``prompt_sha256`` is the hash of (the
        caller checks that it is) and ``sampling`` the request's settings."""
        c, p = answer.candidate, answer.candidate.provenance
        return cls(
            id=c.id,
            run=p.run,
            cycle=p.cycle,
            index=index,
            prompt=prompt,
            prompt_sha256=p.prompt_sha256,
            adapter_name=p.adapter_name,
            adapter_sha256=p.adapter_sha256,
            model=p.model,
            seed=p.seed,
            sampling=sampling,
            raw_text=c.raw_text,
            code=c.code,
            extraction=generator_pb2.Extraction.Name(answer.extraction)
            .removeprefix("EXTRACTION_")
            .lower(),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            finish_reason=answer.finish_reason,
            generation_seconds=answer.latency_s,
        )

    def candidate(self) -> common.Candidate:
        """The candidate as the services exchange it (the record's other boundary)."""
        provenance = message_from(common.Provenance, self, source="generated")
        return message_from(common.Candidate, self, provenance=provenance)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> CandidateRecord:
        return _from_dict(cls, _loads(line))


@dataclass(frozen=True)
class TrainingPair:
    """What the trainer learns from: the generator's exact prompt and the answer to write."""

    prompt: str
    completion: str
    candidate_id: str = ""
    accuracy: float = 0.0

    @classmethod
    def from_record(cls, record: CandidateRecord) -> TrainingPair:
        """The pair for a selected candidate: its prompt as generated (parent included), its
        answer in the format the prompt asked for (the code as one python block, or in ``diff``
        mode the diff that made it as one diff block), never the raw text around it."""
        if not record.prompt or not record.code.strip():
            raise RecordError(f"candidate {record.id} has no prompt or no code")
        if record.prompt_sha256 and sha256_text(record.prompt) != record.prompt_sha256:
            raise RecordError(f"candidate {record.id}: its prompt does not match its hash")
        if record.mode == "diff":
            if not record.diff.strip():
                raise RecordError(f"candidate {record.id} is a diff answer without its diff")
            return cls(record.prompt, render_diff(record.diff), record.id, record.accuracy)
        return cls(record.prompt, render_answer(record.code), record.id, record.accuracy)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> TrainingPair:
        pair = _from_dict(cls, _loads(line))
        if not isinstance(pair.prompt, str) or not isinstance(pair.completion, str):
            raise RecordError("prompt and completion must be text")
        if not pair.completion.strip():
            raise RecordError("the completion is empty")
        return pair


def dumps_lines(items: Iterable[CandidateRecord | TrainingPair]) -> bytes:
    return "".join(item.to_json() + "\n" for item in items).encode()


def loads_records(data: bytes) -> list[CandidateRecord]:
    return _loads_lines(data, CandidateRecord.from_json)


def loads_pairs(data: bytes) -> list[TrainingPair]:
    return _loads_lines(data, TrainingPair.from_json)


def _loads_lines(data: bytes, parse: Callable[[str], T]) -> list[T]:
    out: list[T] = []
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(parse(line))
        except RecordError as e:
            raise RecordError(f"line {n}: {e}") from None
    return out


def _loads(line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as e:
        raise RecordError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    return data


def _from_dict(kind: type[D], data: dict[str, Any]) -> D:
    """``kind`` from ``data``, ignoring unknown keys; nested records are built too."""
    hints = typing.get_type_hints(kind)
    kwargs: dict[str, Any] = {}
    for f in fields(kind):
        if f.name not in data:
            continue
        value = data[f.name]
        nested = _record_type(hints[f.name])
        if nested is not None and isinstance(value, dict):
            value = _from_dict(nested, value)
        kwargs[f.name] = value
    try:
        return kind(**kwargs)
    except TypeError as e:
        raise RecordError(f"missing fields: {e}") from None


def _record_type(hint: Any) -> type | None:
    args: Sequence[Any] = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for a in args:
        if a in (Evaluation, NoveltyVerdict):
            return a
    return None
