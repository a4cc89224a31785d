"""gRPC servicer for the evaluator: messages in, engine calls, messages out.

Each verdict leaves as ``Evaluation.to_proto`` (``nasloop.records``), the one converter of an
evaluation to its message."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc

from nasloop.config import Config
from nasloop.rpc import Registration, ServiceHost
from nasloop.store import ObjectStore, open_store
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc
from services.evaluator import protocols
from services.evaluator.datasets import DatasetCache
from services.evaluator.engine import Evaluator, Executor, candidate_id

log = logging.getLogger("nasloop.evaluator")


def _cancel_event(context: grpc.ServicerContext) -> threading.Event:
    """Set when the call ends for any reason: cancelled by the client, deadline, or done."""
    event = threading.Event()
    context.add_callback(event.set)
    return event


class EvaluatorServicer(pb_grpc.EvaluatorServicer):
    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def Validate(
        self, request: pb.ValidateRequest, context: grpc.ServicerContext
    ) -> pb.ValidateResponse:
        protocol = protocols.resolve(request.protocol, self.evaluator.cfg)
        candidates = request.candidates
        verdicts = self.evaluator.run(candidates, protocol, "validate", _cancel_event(context))
        return pb.ValidateResponse(
            results=[
                e.to_proto(candidate_id(candidates[i], i), i)
                for i, e in sorted(verdicts, key=lambda v: v[0])
            ]
        )

    def Evaluate(
        self, request: pb.EvaluateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.EvaluationResult]:
        protocol = protocols.resolve(request.protocol, self.evaluator.cfg)
        candidates = request.candidates
        verdicts = self.evaluator.run(
            candidates, protocol, "evaluate", _cancel_event(context), request.max_parallel
        )
        for i, e in verdicts:
            yield e.to_proto(candidate_id(candidates[i], i), i)

    def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> pb.ListDatasetsResponse:
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
    service = Registration.of(pb, pb_grpc, "Evaluator", EvaluatorServicer(evaluator))
    port = cfg.evaluator.port if port is None else port
    return ServiceHost.of("evaluator", cfg, port, service, on_stop=executor.close), evaluator


def serve(cfg: Config) -> None:
    """Run until SIGTERM: bind, prepare the default dataset and the workers, then SERVING."""
    host, evaluator = build(cfg)

    def prepare() -> None:
        evaluator.datasets.get(cfg.evaluator.dataset, cfg.evaluator.cifar10_source or "")
        start = getattr(evaluator.executor, "start", None)
        if start is not None:
            start()

    host.serve(prepare)
