"""The local executor: a pool of warm sandbox workers running candidates in parallel."""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nasloop.config import EvaluatorConfig
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from services.evaluator import seccomp_filter
from services.evaluator.confine import limits_for
from services.evaluator.datasets import Prepared
from services.evaluator.report import Report
from services.evaluator.sandbox import SandboxError, SandboxWorker, worker_argv
from services.evaluator.task import Task

log = logging.getLogger("nasloop.evaluator.pool")


class LocalExecutor:
    """Runs each candidate in a forked, confined child of one of ``cfg.workers`` warm workers."""

    def __init__(self, cfg: EvaluatorConfig, data_dir: Path) -> None:
        self.cfg = cfg
        self.strict = cfg.sandbox == "strict"
        if self.strict and not seccomp_filter.available():
            raise SandboxError("strict sandbox needs seccomp bindings (pip install pyseccomp)")
        if not self.strict:
            log.warning(
                "EVALUATOR SANDBOX IS WEAK: candidates run without bubblewrap namespaces%s. "
                "Untrusted code can read this machine's files and reach its network. "
                "Use evaluator.sandbox=strict outside development.",
                "" if seccomp_filter.available() else " and without seccomp",
            )
        self.kind: int = pb.EXECUTOR_LOCAL_SANDBOX if self.strict else pb.EXECUTOR_LOCAL_UNSANDBOXED
        # Root drops each child to the sandbox uid. A non-root evaluator cannot; in strict mode
        # each child becomes the sandbox uid in a user namespace of its own instead (mapped to
        # the worker's uid), so that it is not uid 0 of the worker's namespace.
        self.user_namespace = self.strict and os.geteuid() != 0
        self.uid = cfg.sandbox_uid if os.geteuid() == 0 or self.user_namespace else None
        argv, env = worker_argv(self.strict, data_dir, cfg.tmp_bytes)
        self.workers = [SandboxWorker(f"w{i}", argv, env) for i in range(cfg.workers)]
        self._idle: queue.Queue[SandboxWorker] = queue.Queue()

    def start(self) -> None:
        """Start every worker (in parallel: each imports torch)."""
        with ThreadPoolExecutor(len(self.workers)) as ex:
            list(ex.map(lambda w: w.start(), self.workers))
        for w in self.workers:
            self._idle.put(w)

    def run(self, task: Task, dataset: Prepared, cancelled: threading.Event) -> tuple[Report, str]:
        while True:  # wait for a free worker, unless the call is cancelled meanwhile
            try:
                worker = self._idle.get(timeout=0.2)
                break
            except queue.Empty:
                if cancelled.is_set():
                    report = Report(last_stage=common.STAGE_POLICY)
                    return report.fail(common.STATUS_CANCELLED, "cancelled before it started"), ""
        try:
            # On CUDA the workers share one GPU: each candidate process gets 1/workers of its
            # memory (torch's allocator limit, set before the candidate's code runs).
            limits = limits_for(
                task, self.cfg, self.uid, seccomp_filter.available(), self.user_namespace,
                gpu_share=1.0 / self.cfg.workers,
            )  # fmt: skip
            return worker.run(task, dataset.sandbox_file, limits, cancelled), worker.name
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        for w in self.workers:
            w.close()
