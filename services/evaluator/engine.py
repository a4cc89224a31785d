"""The evaluator's logic: static stages here, the rest in an executor, scoring here again.

Plain Python, no gRPC: the servicer turns messages into calls of :class:`Evaluator`. Candidates
come in as the wire's ``Candidate``; each verdict goes out as ``(index, Evaluation)``, the one
evaluation type (``nasloop.records``), made from the run's :class:`Report` at the end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol as Interface

import numpy as np

from nasloop.config import EvaluatorConfig
from nasloop.records import Evaluation
from nasloop.rpc import InvalidArgument, ResourceExhausted
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from services.evaluator.datasets import DatasetCache, DatasetError, DatasetInfo, Prepared
from services.evaluator.policy import static_check
from services.evaluator.report import Report
from services.evaluator.task import Mode, Protocol, Task

log = logging.getLogger("nasloop.evaluator")


class Executor(Interface):
    """Where candidates run: local sandbox workers or Kubernetes Jobs."""

    kind: int  # evaluator_pb2.Executor

    def run(
        self, task: Task, dataset: Prepared, cancelled: threading.Event
    ) -> tuple[Report, str]: ...

    def close(self) -> None: ...


def candidate_id(candidate: common.Candidate, index: int) -> str:
    """The candidate's id, or one made from its position when the request gave none."""
    return candidate.id or f"candidate-{index}"


def score(report: Report, labels: np.ndarray, floor: float) -> Report:
    """Turn a sandbox's test outputs into accuracy, here where the labels are."""
    outputs, report.outputs = report.outputs, None
    if report.status != common.STATUS_OK:
        return report
    if outputs is None or outputs.shape[0] != len(labels):
        report.last_stage = min(report.last_stage, common.STAGE_TRAINED)
        return report.fail(common.STATUS_NO_RESULT, "the sandbox returned no usable test outputs")
    accuracy = float((outputs.argmax(axis=1) == labels).mean())
    report.last_stage = common.STAGE_EVALUATED
    report.timings.append((common.STAGE_EVALUATED, report.eval_seconds))
    report.accuracy = accuracy
    if accuracy <= floor:
        return report.fail(
            common.STATUS_LOW_ACCURACY, f"accuracy {accuracy:.4f} is at or below {floor:g}"
        )
    return report


class Evaluator:
    def __init__(self, cfg: EvaluatorConfig, executor: Executor, datasets: DatasetCache) -> None:
        self.cfg = cfg
        self.executor = executor
        self.datasets = datasets
        self._calls = threading.BoundedSemaphore(cfg.max_calls)

    def dataset(self, protocol: Protocol) -> Prepared:
        """A request may name a store key under datasets/; local paths only come from config."""
        source = protocol.dataset_source
        if protocol.dataset == "cifar10" and not source:
            source = self.cfg.cifar10_source or ""
        configured = source == (self.cfg.cifar10_source or "")
        try:
            return self.datasets.get(protocol.dataset, source, allow_local=configured)
        except DatasetError as e:
            raise InvalidArgument(str(e)) from None

    def list_datasets(self) -> list[DatasetInfo]:
        infos = [self.datasets.get("digits").info]
        if self.cfg.cifar10_source:
            try:
                infos.append(self.datasets.get("cifar10", self.cfg.cifar10_source).info)
            except DatasetError as e:
                log.warning("cifar10 is configured but unavailable: %s", e)
        return infos

    def _check_batch(self, candidates: Sequence[common.Candidate]) -> None:
        if not candidates:
            raise InvalidArgument("no candidates")
        if len(candidates) > self.cfg.max_candidates:
            raise InvalidArgument(
                f"{len(candidates)} candidates in one call; the limit is {self.cfg.max_candidates}"
            )

    def run(
        self,
        candidates: Sequence[common.Candidate],
        protocol: Protocol,
        mode: Mode,
        cancelled: threading.Event,
        max_parallel: int = 0,
    ) -> Iterator[tuple[int, Evaluation]]:
        """Yield each candidate's position and verdict as it completes (static failures
        first)."""
        self._check_batch(candidates)
        if not self._calls.acquire(blocking=False):
            raise ResourceExhausted(
                f"the evaluator is running {self.cfg.max_calls} calls; retry later"
            )
        try:
            prepared = self.dataset(protocol)
            yield from self._run(candidates, protocol, mode, cancelled, max_parallel, prepared)
        finally:
            self._calls.release()

    def _run(
        self,
        candidates: Sequence[common.Candidate],
        protocol: Protocol,
        mode: Mode,
        cancelled: threading.Event,
        max_parallel: int,
        prepared: Prepared,
    ) -> Iterator[tuple[int, Evaluation]]:
        runnable: list[tuple[int, Task]] = []
        for i, c in enumerate(candidates):
            static = static_check(c.code, self.cfg.max_code_bytes)
            if static.status != common.STATUS_OK:
                yield i, static.evaluation(pb.EXECUTOR_STATIC)
            else:
                cid = candidate_id(c, i)
                task = Task(cid, c.code, protocol, mode, self.cfg.threads_per_candidate)
                runnable.append((i, task))
        if not runnable:
            return
        parallel = min(max_parallel or self.cfg.workers, self.cfg.workers, len(runnable))
        labels = prepared.test_labels
        if protocol.test_subset:
            labels = labels[: protocol.test_subset]

        def one(i: int, task: Task) -> tuple[int, Evaluation]:
            if cancelled.is_set():
                r = Report(last_stage=common.STAGE_POLICY)
                r.fail(common.STATUS_CANCELLED, "cancelled before it started")
                return i, r.evaluation(self.executor.kind)
            try:
                report, ref = self.executor.run(task, prepared, cancelled)
            except Exception as e:  # the executor failed, not the candidate
                log.exception("executor failed on %s", task.candidate_id)
                report = Report(last_stage=common.STAGE_POLICY).fail(
                    common.STATUS_INTERNAL_ERROR, f"evaluator error: {type(e).__name__}"
                )
                ref = ""
            if mode == "evaluate":
                report = score(report, labels, protocol.failure_floor)
            else:
                report.outputs = None
            return i, report.evaluation(self.executor.kind, ref)

        with ThreadPoolExecutor(parallel, thread_name_prefix="evaluate") as pool:
            pending: set[Future[tuple[int, Evaluation]]] = {
                pool.submit(one, i, t) for i, t in runnable
            }
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        yield f.result()
            finally:  # the caller went away (cancel, deadline): stop what still runs
                cancelled.set()
