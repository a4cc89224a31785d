"""gRPC servicer for the trainer: messages in, job manager calls, messages out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from nasloop.config import Config
from nasloop.rpc import Registration, ServiceHost, call_active
from nasloop.store import open_store
from nasloop.v1 import trainer_pb2 as pb
from nasloop.v1 import trainer_pb2_grpc as pb_grpc
from services.trainer.jobs import JobManager


class TrainerServicer(pb_grpc.TrainerServicer):
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def StartJob(self, request: pb.StartJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self.jobs.start(request)

    def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobProgress]:
        yield from self.jobs.watch(request.job_id, call_active(context))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self.jobs.get(request.job_id)

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(jobs=self.jobs.list(list(request.states)))

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self.jobs.cancel(request.job_id)


def build(cfg: Config, port: int | None = None) -> tuple[ServiceHost, JobManager]:
    jobs = JobManager(cfg.trainer, open_store(cfg.store))
    service = Registration.of(pb, pb_grpc, "Trainer", TrainerServicer(jobs))
    port = cfg.trainer.port if port is None else port
    return ServiceHost.of("trainer", cfg, port, service, on_stop=jobs.close), jobs


def serve(cfg: Config) -> None:
    """Run until SIGTERM."""
    if cfg.trainer.threads:
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    host, _ = build(cfg)
    host.serve()
