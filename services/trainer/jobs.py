"""Training jobs: checked at start, queued, run one at a time, watched, cancelled.

Jobs live in this process (a restart forgets them; their published adapters stay in the store).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from nasloop import artifacts
from nasloop.config import TrainerConfig
from nasloop.records import TrainingPair
from nasloop.rpc import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from nasloop.store import ObjectStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import trainer_pb2 as pb
from services.trainer import inputs, sft
from services.trainer.publish import publish
from services.trainer.spec import TrainSpec, from_request

log = logging.getLogger("nasloop.trainer")
ENDED = (common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class JobRecord:
    def __init__(self, job: pb.Job, spec: TrainSpec, base: artifacts.BaseModel,
                 parent: artifacts.AdapterMeta | None,
                 pairs: list[TrainingPair]) -> None:  # fmt: skip
        self.job = job
        self.spec = spec
        self.base = base
        self.parent = parent
        self.pairs = pairs
        self.cancelled = threading.Event()
        self.version = 0


class JobManager:
    def __init__(self, cfg: TrainerConfig, store: ObjectStore) -> None:
        self.cfg = cfg
        self.store = store
        self.cache = Path(cfg.cache_dir).resolve()
        self._jobs: dict[str, JobRecord] = {}
        self._lock = threading.Condition()
        self._queue: queue.Queue[JobRecord | None] = queue.Queue()
        self._runner = threading.Thread(target=self._run_forever, name="trainer", daemon=True)
        self._runner.start()

    # -- requests ---------------------------------------------------------------------------
    def start(self, req: pb.StartJobRequest) -> pb.Job:
        job_id = req.job_id or f"job-{uuid.uuid4().hex[:12]}"
        with self._lock:
            existing = self._jobs.get(job_id)
        if existing is not None:
            same = pb.StartJobRequest()
            same.CopyFrom(req)
            same.job_id = job_id
            if same.SerializeToString(deterministic=True) != existing.job.spec.SerializeToString(
                deterministic=True
            ):
                raise AlreadyExists(f"job {job_id} exists with a different spec")
            return self.get(job_id)
        spec = from_request(req, job_id)
        if self.store.get_manifest(spec.output_prefix) is not None:
            raise AlreadyExists(f"an adapter is already published at {spec.output_prefix}/")
        base = artifacts.resolve_base(self.store, spec.base_model)
        parent = inputs.resolve_parent(self.store, spec, base)
        pairs, data_sha = inputs.read_pairs(self.store, spec, self.cfg.max_pairs_bytes)
        job = pb.Job(id=job_id, state=common.JOB_STATE_QUEUED, created=_now(), data_sha256=data_sha)
        job.spec.CopyFrom(req)
        job.spec.job_id = job_id
        job.progress.CopyFrom(pb.JobProgress(job_id=job_id, state=common.JOB_STATE_QUEUED))
        record = JobRecord(job, spec, base, parent, pairs)
        with self._lock:
            if job_id in self._jobs:  # a concurrent StartJob with the same id won the race
                return self.start(req)
            active = sum(r.job.state not in ENDED for r in self._jobs.values())
            if active >= self.cfg.max_jobs:
                raise ResourceExhausted(f"{active} jobs are queued or running; retry later")
            self._jobs[job_id] = record
        self._queue.put(record)
        log.info("job %s queued: %d pairs for %s", job_id, len(pairs), spec.output_prefix)
        return self.get(job_id)

    def _record(self, job_id: str) -> JobRecord:
        with self._lock:
            record = self._jobs.get(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}")
        return record

    def get(self, job_id: str) -> pb.Job:
        record = self._record(job_id)
        with self._lock:
            out = pb.Job()
            out.CopyFrom(record.job)
            return out

    def list(self, states: list[int]) -> list[pb.Job]:
        with self._lock:
            ids = [j for j, r in self._jobs.items() if not states or r.job.state in states]
        return [self.get(j) for j in ids]

    def cancel(self, job_id: str) -> pb.Job:
        record = self._record(job_id)
        with self._lock:
            if record.job.state not in ENDED:
                record.cancelled.set()
                if record.job.state == common.JOB_STATE_QUEUED:
                    self._finish(record, common.JOB_STATE_CANCELLED, "cancelled before it ran")
        return self.get(job_id)

    def watch(self, job_id: str, active: threading.Event | None = None) -> Iterator[pb.JobProgress]:
        """The job's progress now and at every change, until it ends or ``active`` clears."""
        record = self._record(job_id)
        seen = -1
        while True:
            with self._lock:
                while record.version == seen:
                    self._lock.wait(timeout=1.0)
                    if active is not None and not active.is_set():
                        return
                seen = record.version
                progress = pb.JobProgress()
                progress.CopyFrom(record.job.progress)
                ended = record.job.state in ENDED
            yield progress
            if ended:
                return

    def close(self) -> None:
        with self._lock:
            for r in self._jobs.values():
                r.cancelled.set()
        self._queue.put(None)
        self._runner.join(timeout=30)

    # -- running ----------------------------------------------------------------------------
    def _changed(self, record: JobRecord) -> None:
        record.version += 1
        self._lock.notify_all()

    def _finish(self, record: JobRecord, state: common.JobState, message: str = "") -> None:
        """Call with the lock held."""
        job = record.job
        job.state = state
        job.finished.CopyFrom(_now())
        job.progress.state = state
        job.progress.message = message
        if state == common.JOB_STATE_FAILED:
            job.error = message
        record.pairs = []
        self._changed(record)

    def _run_forever(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            if record.cancelled.is_set():
                continue
            try:
                self._run(record)
            except Exception:  # never let one job stop the runner
                log.exception("job %s crashed the runner", record.job.id)

    def _run(self, record: JobRecord) -> None:
        spec = record.spec
        with self._lock:
            record.job.state = common.JOB_STATE_RUNNING
            record.job.started.CopyFrom(_now())
            record.job.progress.state = common.JOB_STATE_RUNNING
            self._changed(record)
        work = self.cache / "jobs" / spec.job_id
        try:
            model_dir = artifacts.local_model_dir(self.store, record.base, self.cache)
            parent_dir = None
            if record.parent is not None:
                parent_dir = artifacts.fetch_artifact(
                    self.store, record.parent.prefix, self.cache / "adapters" / record.parent.sha256
                )

            def progress(p: pb.JobProgress) -> None:
                with self._lock:
                    p.job_id, p.state = spec.job_id, common.JOB_STATE_RUNNING
                    record.job.progress.CopyFrom(p)
                    self._changed(record)

            t0 = time.perf_counter()
            result = sft.train_lora(
                spec, model_dir, record.pairs, work / "adapter",
                parent_dir=parent_dir, device=sft.pick_device(self.cfg.device),
                on_progress=progress, cancelled=record.cancelled,
                log_every=self.cfg.log_every_steps,
            )  # fmt: skip
            if record.cancelled.is_set():
                raise sft.Cancelled
            if self.store.get_manifest(spec.output_prefix) is not None:
                raise FailedPrecondition(f"an adapter appeared at {spec.output_prefix}/ meanwhile")
            adapter = publish(
                self.store, spec, work / "adapter", record.base, record.parent,
                record.job.data_sha256, result,
            )  # fmt: skip
            with self._lock:
                record.job.adapter.CopyFrom(adapter.to_ref())
                record.job.metrics.CopyFrom(
                    pb.TrainingMetrics(
                        initial_loss=result.initial_loss,
                        final_loss=result.final_loss,
                        steps=result.steps,
                        train_tokens=result.train_tokens,
                        tokens_per_second=result.tokens_per_second,
                        train_seconds=result.train_seconds,
                        examples=result.examples,
                    )
                )
                self._finish(record, common.JOB_STATE_SUCCEEDED, "published")
            log.info("job %s published %s in %.1f s", spec.job_id, spec.output_prefix,
                     time.perf_counter() - t0)  # fmt: skip
        except sft.Cancelled:
            with self._lock:
                self._finish(record, common.JOB_STATE_CANCELLED, "cancelled; nothing published")
        except Exception as e:
            log.warning("job %s failed: %s", spec.job_id, e)
            with self._lock:
                self._finish(record, common.JOB_STATE_FAILED, f"{type(e).__name__}: {e}"[:500])
        finally:
            shutil.rmtree(work, ignore_errors=True)
