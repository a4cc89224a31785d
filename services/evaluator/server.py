"""gRPC servicer for the evaluator: messages in, engine calls, messages out."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from nasloop.config import Config
from nasloop.rpc import Registration, ServiceHost
from nasloop.store import ObjectStore, open_store
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc
from services.evaluator import protocols
from services.evaluator.datasets import DatasetCache
from services.evaluator.engine import Evaluator, Executor, Outcome

log = logging.getLogger("nasloop.evaluator")


def outcome_to_pb(o: Outcome) -> pb.EvaluationResult:
    r = o.report
    return pb.EvaluationResult(
        candidate_id=o.candidate_id,
        index=o.index,
        result=common.ValidationResult(
            last_stage=r.last_stage,
            status=r.status,
            message=r.message,
            metrics=common.CandidateMetrics(
                accuracy=r.accuracy,
                loss=r.loss,
                parameter_count=r.parameter_count,
                train_seconds=r.train_seconds,
                eval_seconds=r.eval_seconds,
                peak_memory_bytes=r.peak_memory_bytes,
                trained_samples=r.trained_samples,
                optimizer_steps=r.optimizer_steps,
                informative=r.informative,
            ),
            timings=[common.StageTiming(stage=s, seconds=t) for s, t in r.timings],
            hyperparameters=r.hyperparameters,
        ),
        executor=o.executor,
        executor_ref=o.executor_ref,
        output_tail=r.output_tail,
    )


def _cancel_event(context) -> threading.Event:  # type: ignore[no-untyped-def]
    """Set when the call ends for any reason: cancelled by the client, deadline, or done."""
    event = threading.Event()
    context.add_callback(event.set)
    return event


class EvaluatorServicer(pb_grpc.EvaluatorServicer):
    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def _candidates(self, request) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        return [(c.id or f"candidate-{i}", c.code) for i, c in enumerate(request.candidates)]

    def Validate(self, request, context):  # type: ignore[no-untyped-def]
        protocol = protocols.resolve(request.protocol, self.evaluator.cfg)
        outcomes = self.evaluator.run(
            self._candidates(request), protocol, "validate", _cancel_event(context)
        )
        ordered = sorted(outcomes, key=lambda o: o.index)
        return pb.ValidateResponse(results=[outcome_to_pb(o) for o in ordered])

    def Evaluate(self, request, context):  # type: ignore[no-untyped-def]
        protocol = protocols.resolve(request.protocol, self.evaluator.cfg)
        outcomes = self.evaluator.run(
            self._candidates(request),
            protocol,
            "evaluate",
            _cancel_event(context),
            request.max_parallel,
        )
        for o in outcomes:
            yield outcome_to_pb(o)

    def ListDatasets(self, request, context):  # type: ignore[no-untyped-def]
        p = protocols.named(self.evaluator.cfg)[protocols.DEFAULT]
        return pb.ListDatasetsResponse(
            datasets=[
                pb.DatasetInfo(
                    name=d.name,
                    in_shape=[p.batch_size, *d.image_shape],
                    out_shape=[d.num_classes],
                    train_size=d.train_size,
                    test_size=d.test_size,
                    normalisation=d.normalisation,
                )
                for d in self.evaluator.list_datasets()
            ]
        )


def make_executor(cfg: Config, store: ObjectStore, datasets: DatasetCache) -> Executor:
    if cfg.evaluator.executor == "kubernetes":
        from services.evaluator.kube.launcher import executor_from_config

        return executor_from_config(cfg, store)
    from services.evaluator.pool import LocalExecutor

    return LocalExecutor(cfg.evaluator, datasets.data_dir)


def build(cfg: Config, port: int | None = None) -> tuple[ServiceHost, Evaluator]:
    """The evaluator service; ``serve`` starts the executor before reporting SERVING."""
    store = open_store(cfg.store)
    datasets = DatasetCache(Path(cfg.evaluator.data_dir), store)
    executor = make_executor(cfg, store, datasets)
    evaluator = Evaluator(cfg.evaluator, executor, datasets)
    host = ServiceHost(
        "evaluator",
        cfg.server,
        cfg.evaluator.port if port is None else port,
        [Registration.of(pb, pb_grpc, "Evaluator", EvaluatorServicer(evaluator))],
        on_stop=executor.close,
        tls=cfg.tls,
    )
    return host, evaluator


def serve(cfg: Config) -> None:
    """Run until SIGTERM: bind, prepare the default dataset and the workers, then SERVING."""
    host, evaluator = build(cfg)
    host.install_signal_handlers()
    host.start()
    evaluator.datasets.get(cfg.evaluator.dataset, cfg.evaluator.cifar10_source or "")
    start = getattr(evaluator.executor, "start", None)
    if start is not None:
        start()
    host.set_serving()
    host.wait()
