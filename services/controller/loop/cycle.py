"""One cycle of the loop: generate → evaluate → novelty → select → fine-tune → publish →
hot-load → summary, each step durable in the store before the next begins.

Resuming is running the cycle again: steps marked done in ``progress.json`` are skipped, and the
generate step evaluates only the candidates without a durable result. Every call a step makes
is idempotent by a deterministic id (candidate ids, the trainer's job id, the adapter's name and
prefix), so a step repeated after a crash adds nothing twice. The same code runs in the
controller's process (local mode) and in a Kubernetes Job (``nasloop cycle``).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import grpc

from nasloop import layout
from nasloop.artifacts import AdapterMeta, read_manifest
from nasloop.records import (
    CandidateRecord,
    Evaluation,
    NoveltyVerdict,
    TrainingPair,
    dumps_lines,
    loads_pairs,
    sha256_text,
)
from nasloop.store import ObjectNotFound, ObjectStore, sha256_hex
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import generator_pb2, trainer_pb2
from services.controller.clients import NoveltyClient, Services
from services.controller.loop import state as st
from services.controller.loop.selection import select
from services.controller.loop.summary import CycleSummary, load_summary, save_summary, summarize
from services.controller.runspec import (
    PRECISIONS,
    RunSpec,
    evaluation_protocol,
    lora_config,
    namespace_params,
    sampling_params,
    task_spec,
)

log = logging.getLogger("nasloop.controller")

CANDIDATE_BITS = 20  # room for answer indices above a cycle's first seed (≥ 4096 candidates)
EVAL_BATCH = 8  # candidates per Evaluate call
EVAL_CALLS = 3  # Evaluate calls in flight at once
NOVELTY_BATCH = 512
# Statuses that are not the candidate's doing: evaluated again instead of recorded.
RETRY_STATUSES = ("STATUS_CANCELLED", "STATUS_INTERNAL_ERROR", "STATUS_EVICTED")
EVAL_ATTEMPTS = 2


class CycleError(RuntimeError):
    """A step failed; the cycle stops there and resumes at that step."""


class Stopped(RuntimeError):
    """The run was asked to stop (after the current step, or at once)."""


@dataclass
class Event:
    """Something the cycle did, for watchers (WatchRun, the CLI's progress bars)."""

    run: str
    cycle: int
    step: str
    message: str = ""
    candidate: CandidateRecord | None = None
    training: dict[str, Any] | None = None
    summary: CycleSummary | None = None
    counts: dict[str, int] = field(default_factory=dict)  # e.g. generated/evaluated so far


@dataclass
class StopSignal:
    """``after_step``: stop when the current step is done. ``now``: abort calls in flight."""

    after_step: threading.Event = field(default_factory=threading.Event)
    now: threading.Event = field(default_factory=threading.Event)

    def set(self, now: bool = False) -> None:
        self.after_step.set()
        if now:
            self.now.set()


class Busy:
    """Wall time during which at least one service call was in flight (the rest of a cycle's
    wall time is the controller's own overhead)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.seconds = 0.0

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self.seconds += time.perf_counter() - self._since


class Cycle:
    """One cycle; :class:`services.controller.loop.baseline.Baseline` reuses its machinery (the step
    loop, generate+evaluate, novelty, summary) with its own steps, ids and novelty call."""

    steps: tuple[str, ...] = st.STEPS
    done_message = "cycle done"

    def __init__(
        self,
        run: str,
        cycle: int,
        spec: RunSpec,
        store: ObjectStore,
        services: Services,
        emit: Callable[[Event], None] = lambda e: None,
        stop: StopSignal | None = None,
        overlap: bool = True,
    ) -> None:
        self.run = run
        self.n = cycle
        self.spec = spec
        self.store = store
        self.services = services
        self.emit = emit
        self.stop = stop or StopSignal()
        self.overlap = overlap
        self.busy = Busy()  # any service call
        self.generating = Busy()  # Generate streams
        self.evaluating = Busy()  # Evaluate streams
        self._streams: list[Any] = []  # calls in flight, cancelled on a stop "now"
        self._streams_lock = threading.Lock()
        # generate+evaluate counts, shared by the generating thread and the Evaluate calls;
        # a candidate is counted and emitted under it, so its events go out in count order
        self._counts_lock = threading.Lock()
        self._finished = threading.Event()
        self._summary_written: CycleSummary | None = None

    # -- the cycle --------------------------------------------------------------------------
    def run_cycle(self, previous: st.AdapterState | None) -> CycleSummary:
        """Run (or resume) the cycle; ``previous`` is the adapter it generates with."""
        progress = st.load_progress(self.store, self.run, self.n)
        if progress is None:
            progress = self._new_progress(previous)
            st.save_progress(self.store, self.run, progress)
        started = time.perf_counter()
        busy_before = self.busy.seconds
        watcher = threading.Thread(target=self._cancel_on_stop, daemon=True)
        watcher.start()
        try:
            for step in self.steps:
                if progress.is_done(step):
                    continue
                if self.stop.after_step.is_set():
                    raise Stopped(f"stopped before {step}")
                self.emit(Event(self.run, self.n, self.phase_of(step), f"{step} started"))
                t0 = time.perf_counter()
                getattr(self, f"_{step}")(progress)
                progress.seconds[step] = progress.seconds.get(step, 0.0) + time.perf_counter() - t0
                progress.done.append(step)
                self._account(progress, started, busy_before)
                started, busy_before = time.perf_counter(), self.busy.seconds
                st.save_progress(self.store, self.run, progress)
                if step != "summary":  # the summary step announces the cycle's end itself
                    self.emit(Event(self.run, self.n, self.phase_of(step), f"{step} done"))
        except BaseException:
            self._account(progress, started, busy_before)
            st.save_progress(self.store, self.run, progress)
            raise
        finally:
            self._finished.set()
        return self._result()

    # -- what a baseline does differently --------------------------------------------------
    def _new_progress(self, previous: st.AdapterState | None) -> st.CycleProgress:
        """A first attempt's progress: answer i samples with seed ``progress.seed + i``."""
        seed = cycle_seed(self.spec.seed, self.n)
        return st.CycleProgress(cycle=self.n, generated_with=previous, seed=seed)

    @classmethod
    def phase_of(cls, step: str) -> str:
        """The step as watchers see it (``Event.step``)."""
        return step

    def _candidate_id(self, index: int) -> str:
        return layout.candidate_id(self.run, self.n, index)

    def _verdicts(self, own: str, consult: list[str], items: list[tuple[str, str]]) -> list[Any]:
        """Novelty verdicts (``CheckResult``) for ``(id, code)`` items; a cycle adds the novel
        ones to the run's namespace."""
        return self.services.novelty.batch_check_and_add(own, consult, items)

    # -- bookkeeping ------------------------------------------------------------------------
    def _account(self, progress: st.CycleProgress, started: float, busy_before: float) -> None:
        progress.wall_seconds += time.perf_counter() - started
        progress.service_seconds += self.busy.seconds - busy_before

    def _cancel_on_stop(self) -> None:
        while not self._finished.is_set():
            if self.stop.now.wait(0.2):
                self._cancel_streams()
                return

    def _cancel_streams(self) -> None:
        with self._streams_lock:
            for call in self._streams:
                call.cancel()

    @contextmanager
    def _stream(self, call: Any) -> Iterator[Any]:
        with self._streams_lock:
            self._streams.append(call)
        if self.stop.now.is_set():
            call.cancel()
        try:
            yield call
        finally:
            with self._streams_lock:
                self._streams.remove(call)

    def _check_stop_now(self) -> None:
        if self.stop.now.is_set():
            raise Stopped("stopped at once")

    # -- generate + evaluate ----------------------------------------------------------------
    def _generate(self, progress: st.CycleProgress) -> None:
        spec = task_spec(self.spec)
        with self.busy.call():
            served = self.services.generator.model_info().model
        if served != self.spec.base_model:
            raise CycleError(
                f"the generator serves {served!r}, the run's spec asks for {self.spec.base_model!r}"
            )
        if progress.generated_with is not None:
            with self.busy.call():
                self.services.generator.load_adapter(progress.generated_with.ref(self.run))
        if not progress.prompt:
            with self.busy.call():
                progress.prompt = self.services.generator.render_prompt(spec).prompt
            progress.prompt_sha256 = sha256_text(progress.prompt)
            st.save_progress(self.store, self.run, progress)
        gen_before, eval_before = self.generating.seconds, self.evaluating.seconds
        try:
            self._generate_all(progress, spec)
        finally:
            progress.generation_seconds += self.generating.seconds - gen_before
            progress.evaluation_seconds += self.evaluating.seconds - eval_before

    def _generate_all(self, progress: st.CycleProgress, spec: common.TaskSpec) -> None:
        done = st.load_evaluated(self.store, self.run, self.n)
        total = self.spec.candidates_per_cycle
        missing = [i for i in range(total) if i not in done]
        counts = {"total": total, "generated": len(done), "evaluated": len(done)}
        if not missing:
            return
        pending = self._generate_and_evaluate(progress, spec, missing, counts)
        for _ in range(EVAL_ATTEMPTS - 1):
            if not pending:
                break
            log.warning("evaluating %d candidates again (evaluator-side failures)", len(pending))
            batches = [pending[i : i + EVAL_BATCH] for i in range(0, len(pending), EVAL_BATCH)]
            pending = [r for batch in batches for r in self._evaluate(batch, counts)]
        for r in pending:  # still failing on the evaluator's side: record what happened
            st.save_evaluated(self.store, r)
        have = st.load_evaluated(self.store, self.run, self.n)
        if len(have) < total:
            raise CycleError(f"the generator returned {len(have)} of {total} answers")

    def _generate_and_evaluate(
        self,
        progress: st.CycleProgress,
        spec: common.TaskSpec,
        indices: list[int],
        counts: dict[str, int],
    ) -> list[CandidateRecord]:
        """Generate answers ``indices`` and evaluate each as it arrives; return the records
        whose evaluation failed on the evaluator's side (not durable, to be retried)."""
        answers: queue.Queue[CandidateRecord | None] = queue.Queue()
        failed: list[BaseException] = []

        def generate() -> None:
            try:
                for record in self._answers(progress, spec, indices):
                    with self._counts_lock:
                        counts["generated"] += 1
                    answers.put(record)
            except BaseException as e:  # handed to the evaluating thread
                failed.append(e)
            finally:
                answers.put(None)

        producer = threading.Thread(target=generate, name="generate", daemon=True)
        producer.start()
        if not self.overlap:
            producer.join()
        retry: list[CandidateRecord] = []
        with ThreadPoolExecutor(EVAL_CALLS, thread_name_prefix="evaluate") as pool:
            try:
                retry = self._dispatch(pool, answers, counts)
            except BaseException:
                self._cancel_streams()  # a failed step leaves nothing running behind it
                raise
            finally:
                producer.join()
        self._check_stop_now()
        if failed:
            raise CycleError(_describe("generation", failed[0])) from failed[0]
        return retry

    def _dispatch(
        self, pool: ThreadPoolExecutor, answers: queue.Queue, counts: dict[str, int]
    ) -> list[CandidateRecord]:
        """Send answers to the evaluator in small batches as they arrive."""
        retry: list[CandidateRecord] = []
        running: set[Future[list[CandidateRecord]]] = set()
        finished = False
        while not finished or running:
            batch: list[CandidateRecord] = []
            while not finished and len(batch) < EVAL_BATCH:
                try:
                    item = answers.get(timeout=0.05 if batch or running else 0.5)
                except queue.Empty:
                    if batch or running:
                        break
                    continue
                if item is None:
                    finished = True
                else:
                    batch.append(item)
            if batch:
                running.add(pool.submit(self._evaluate, batch, counts))
            if running and (len(running) >= EVAL_CALLS or finished or not batch):
                done, running = wait(running, timeout=0.05, return_when=FIRST_COMPLETED)
                for f in done:
                    retry += f.result()  # a failed call raises here
        return retry

    def _answers(
        self, progress: st.CycleProgress, spec: common.TaskSpec, indices: list[int]
    ) -> Iterator[CandidateRecord]:
        """Answers for ``indices``: one Generate call per contiguous range (answer i uses seed
        ``progress.seed + i`` whichever call produces it, so a resumed cycle regenerates exactly
        the answers it lost)."""
        adapter = progress.generated_with
        for first, count in _ranges(indices):
            sampling = sampling_params(self.spec, progress.seed + first)
            request = generator_pb2.GenerateRequest(
                spec=spec,
                n=count,
                sampling=sampling,
                adapter=adapter.name if adapter else "",
                run=self.run,
                cycle=self.n,
                id_prefix=f"{self._candidate_id(first)}-g",
            )
            call = self.services.generator.generate(request)
            with self.busy.call(), self.generating.call(), self._stream(call):
                for answer in call:
                    c = answer.candidate
                    index = first + answer.index
                    if c.provenance.prompt_sha256 != progress.prompt_sha256:
                        raise CycleError(
                            "the generator was given another prompt than the one recorded "
                            f"({c.provenance.prompt_sha256[:12]}… ≠ {progress.prompt_sha256[:12]}…)"
                        )
                    yield CandidateRecord(
                        id=self._candidate_id(index),
                        run=self.run,
                        cycle=self.n,
                        index=index,
                        prompt=progress.prompt,
                        prompt_sha256=progress.prompt_sha256,
                        adapter_name=c.provenance.adapter_name,
                        adapter_sha256=c.provenance.adapter_sha256,
                        model=c.provenance.model,
                        seed=c.provenance.seed,
                        sampling=_sampling_dict(sampling),
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

    def _evaluate(
        self, batch: list[CandidateRecord], counts: dict[str, int]
    ) -> list[CandidateRecord]:
        protocol = evaluation_protocol(self.spec)
        by_id = {r.id: r for r in batch}
        retry: list[CandidateRecord] = []
        call = self.services.evaluator.evaluate([r.candidate() for r in batch], protocol)
        try:
            with self.busy.call(), self.evaluating.call(), self._stream(call):
                for result in call:
                    record = by_id.pop(result.candidate_id)
                    record.evaluation = Evaluation.from_proto(result)
                    if record.evaluation.status in RETRY_STATUSES:
                        retry.append(record)
                        continue
                    st.save_evaluated(self.store, record)
                    phase = self.phase_of("generate")
                    with self._counts_lock:
                        counts["evaluated"] += 1
                        event = Event(
                            self.run, self.n, phase, candidate=record, counts=dict(counts)
                        )
                        self.emit(event)
        except grpc.RpcError as e:
            self._check_stop_now()
            raise CycleError(_describe("evaluation", e)) from e
        if by_id:
            raise CycleError(f"the evaluator returned no result for {sorted(by_id)}")
        return retry

    # -- novelty ----------------------------------------------------------------------------
    def _novelty(self, progress: st.CycleProgress) -> None:
        records = st.load_evaluated(self.store, self.run, self.n)
        params = namespace_params(self.spec)
        own = layout.run_namespace(self.run)
        consult = [self.spec.novelty.corpus_namespace] if self.spec.novelty.corpus_namespace else []
        valid = [records[i] for i in sorted(records) if records[i].valid]
        try:
            with self.busy.call():
                self._seed_corpus_namespace()
                self.services.novelty.ensure_namespace(own, params)
                verdicts = []
                for i in range(0, len(valid), NOVELTY_BATCH):
                    chunk = valid[i : i + NOVELTY_BATCH]
                    verdicts += self._verdicts(own, consult, [(r.id, r.code) for r in chunk])
        except grpc.RpcError as e:
            raise CycleError(_describe("novelty", e)) from e
        for record, v in zip(valid, verdicts, strict=True):
            if v is None:  # no verdict to record (a baseline without a check-only call)
                continue
            record.novelty = NoveltyVerdict(
                v.novel, v.added, v.max_similarity, v.nearest_id, v.nearest_namespace
            )
            st.save_evaluated(self.store, record)

    def _seed_corpus_namespace(self) -> None:
        seed_corpus_namespace(self.services.novelty, self.store, self.spec)

    # -- select -----------------------------------------------------------------------------
    def _select(self, progress: st.CycleProgress) -> None:
        records = self._final_records()
        chosen = select(records, self.spec.selection)
        pairs = [TrainingPair.from_record(r) for r in chosen]
        self.store.put_bytes(layout.pairs_key(self.run, self.n), dumps_lines(pairs))
        self._save_records(records)

    def _final_records(self) -> list[CandidateRecord]:
        evaluated = st.load_evaluated(self.store, self.run, self.n)
        return [evaluated[i] for i in sorted(evaluated)]

    def _save_records(self, records: list[CandidateRecord]) -> None:
        """The final records, one object (``candidates.jsonl``)."""
        self.store.put_bytes(layout.candidates_key(self.run, self.n), dumps_lines(records))

    # -- fine-tune, publish, hot-load -------------------------------------------------------
    def _training_set(self) -> list[TrainingPair]:
        pairs: list[TrainingPair] = []
        for cycle in range(1, self.n + 1):
            with suppress(ObjectNotFound):
                pairs += loads_pairs(self.store.get_bytes(layout.pairs_key(self.run, cycle)))
        return pairs

    def _fine_tune(self, progress: st.CycleProgress) -> None:
        prefix = layout.adapter_prefix(self.run, self.n)
        if self.store.get_manifest(prefix) is not None:
            return  # published before a crash: never train or publish twice
        pairs = self._training_set()
        if not pairs:
            log.info("cycle %d: no training pairs yet; the next cycle keeps its adapter", self.n)
            return
        key = layout.training_set_key(self.run, self.n)
        info = self.store.put_bytes(key, dumps_lines(pairs))
        t = self.spec.training
        parent = progress.generated_with if t.continual else None
        request = trainer_pb2.StartJobRequest(
            job_id=layout.training_job_id(self.run, self.n),
            base_model=self.spec.base_model,
            training_pairs=common.ObjectRef(key=key, sha256=info.sha256, size=info.size),
            lora=lora_config(self.spec),
            lr=t.lr,
            epochs=t.epochs,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            seed=self.spec.seed + self.n,
            max_seq_len=t.max_seq_len,
            precision=PRECISIONS[t.precision],
            output_prefix=prefix,
            run=self.run,
            cycle=self.n,
        )
        if parent is not None:
            request.parent.CopyFrom(parent.ref(self.run))
        trainer = self.services.trainer
        try:
            with self.busy.call():
                job = trainer.start_job(request)
                with self._stream(trainer.watch_job(job.id)) as watch:
                    for p in watch:
                        self.emit(
                            Event(self.run, self.n, "fine_tune", p.message, training=_progress(p))
                        )
                job = trainer.get_job(job.id)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS and self.store.get_manifest(prefix):
                return  # the trainer published it while we were not looking
            self._check_stop_now()
            raise CycleError(_describe("fine-tuning", e)) from e
        if job.state != common.JOB_STATE_SUCCEEDED:
            self._check_stop_now()
            state = common.JobState.Name(job.state)
            raise CycleError(f"training job {job.id} ended {state}: {job.error}")
        m = job.metrics
        progress.training = {
            "pairs": len(pairs),
            "initial_loss": m.initial_loss,
            "final_loss": m.final_loss,
            "steps": m.steps,
            "tokens_per_second": m.tokens_per_second,
            "train_seconds": m.train_seconds,
        }

    def _publish(self, progress: st.CycleProgress) -> None:
        """Record the adapter the trainer published (or, with no pairs yet, keep the old one)."""
        prefix = layout.adapter_prefix(self.run, self.n)
        try:
            manifest, sha = read_manifest(self.store, prefix)
        except ObjectNotFound:
            if self._training_set():
                raise CycleError(f"no adapter was published at {prefix}/") from None
            progress.adapter = progress.generated_with
            return
        meta = self._own_adapter(prefix, AdapterMeta.from_manifest(manifest))
        name = layout.adapter_name(self.run, self.n)
        progress.adapter = st.AdapterState.from_ref(meta.ref(name, prefix, sha))
        if not progress.training and meta.metrics:  # trained before a crash: from the manifest
            progress.training = {k: meta.metrics.get(k) for k in ("initial_loss", "final_loss")}

    def _own_adapter(self, prefix: str, meta: AdapterMeta) -> AdapterMeta:
        """``meta`` if the adapter at ``prefix`` is this cycle's training job's, from this
        cycle's training set; a manifest that says otherwise is never served or continued from
        (whoever put it there), and the cycle fails saying so."""
        job_id = layout.training_job_id(self.run, self.n)
        data = sha256_hex(dumps_lines(self._training_set()))
        found = {"run": meta.run, "cycle": meta.cycle, "job id": meta.job_id}
        wanted = {"run": self.run, "cycle": self.n, "job id": job_id}
        wrong = [k for k in wanted if found[k] != wanted[k]]
        if meta.data_sha256 != data:
            wrong.append("data hash")
        if wrong:
            raise CycleError(
                f"the adapter at {prefix}/ is not this cycle's: its manifest's "
                f"{', '.join(wrong)} differ ({found}, data {meta.data_sha256[:12] or '-'}; "
                f"expected {wanted}, data {data[:12]}). It is not used; remove it to train anew"
            )
        return meta

    def _hot_load(self, progress: st.CycleProgress) -> None:
        adapter = progress.adapter
        if adapter is None or adapter == progress.generated_with:
            return
        generator = self.services.generator
        try:
            with self.busy.call():
                generator.load_adapter(adapter.ref(self.run))
                for info in generator.list_adapters():  # free the slots of older cycles
                    if info.ref.run == self.run and info.name != adapter.name:
                        generator.unload_adapter(info.name)
        except grpc.RpcError as e:
            raise CycleError(_describe("hot-loading", e)) from e

    # -- summary ----------------------------------------------------------------------------
    def _summary(self, progress: st.CycleProgress) -> None:
        progress.finished = st.now()
        records = st.load_candidates(self.store, self.run, self.n)
        summary = summarize(records, progress, self.run, self.spec.selection.min_accuracy)
        save_summary(self.store, summary)
        self._summary_written = summary
        step = self.phase_of("summary")
        self.emit(Event(self.run, self.n, step, self.done_message, summary=summary))

    def _result(self) -> CycleSummary:
        """The summary this run of the cycle wrote, or the one written before (done cycle)."""
        summary = self._summary_written or load_summary(self.store, self.run, self.n)
        if summary is None:
            raise CycleError(f"cycle {self.n} ended without a summary")
        return summary


def seed_corpus_namespace(novelty: NoveltyClient, store: ObjectStore, spec: RunSpec) -> None:
    """The corpus namespace holds the run's seed corpus (idempotent: ids already there are
    skipped, and a namespace holding as many entries as the corpus is only read, never written:
    with mutual TLS a cycle Job may not write to it, so in cluster mode the controller seeds it
    before it starts the Job)."""
    ns, corpus = spec.novelty.corpus_namespace, spec.corpus
    if not ns or not corpus:
        return
    from nasloop.corpus.records import CorpusNotFound, load_corpus, to_novelty_items

    try:
        records = load_corpus(store, corpus)
    except CorpusNotFound:
        raise CycleError(
            f"no corpus {corpus!r} in the store (nasloop corpus seed --name {corpus})"
        ) from None
    try:
        if novelty.get_namespace(ns).entries >= len(records):
            return
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
    novelty.ensure_namespace(ns, namespace_params(spec))
    items = to_novelty_items(records)
    for i in range(0, len(items), NOVELTY_BATCH):
        novelty.add(ns, items[i : i + NOVELTY_BATCH])


def cycle_seed(run_seed: int, cycle: int) -> int:
    """The sampling seed of answer 0 of ``cycle`` (answer i uses it + i): a hash of the run's
    seed and the cycle, so runs with different seeds share no answer. (A plain ``seed + n·10⁶``
    made seeds 0 and 1 share 47 of 48 answers per cycle.) Below 2**63, the generator's limit."""
    digest = hashlib.sha256(f"nasloop-sampling:{run_seed}:{cycle}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (CANDIDATE_BITS + 1) << CANDIDATE_BITS


def _ranges(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Contiguous runs of sorted ``indices`` as (first, count)."""
    start = prev = None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield start, prev - start + 1
            start = prev = i
    if start is not None:
        yield start, prev - start + 1


def _sampling_dict(s: common.SamplingParams) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(s, preserving_proto_field_name=True)


def _progress(p: trainer_pb2.JobProgress) -> dict[str, Any]:
    return {
        "state": common.JobState.Name(p.state),
        "step": p.step,
        "total_steps": p.total_steps,
        "epoch": p.epoch,
        "loss": p.loss,
        "tokens_per_second": p.tokens_per_second,
        "elapsed_s": p.elapsed_s,
        "eta_s": p.eta_s,
    }


def _describe(what: str, e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{what} failed: {e.code().name}: {e.details()}"
    return f"{what} failed: {e}"
