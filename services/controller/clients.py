"""Typed clients of the four services, with a deadline on every call.

``connect()`` gives unary calls a 30 s default, which is wrong for a LoadAdapter that fetches a
large adapter or for an Evaluate stream that trains hundreds of networks, so every method here
passes its own deadline from :class:`~nasloop.config.CallDeadlines`. A deadline that fires
raises ``grpc.RpcError`` (DEADLINE_EXCEEDED) like any other failed call: the caller decides.
Streams are returned as iterators that the caller may ``cancel()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc

from nasloop.config import CallDeadlines, ControllerConfig, TlsConfig
from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as evaluator
from nasloop.v1 import evaluator_pb2_grpc, generator_pb2_grpc, novelty_pb2_grpc, trainer_pb2_grpc
from nasloop.v1 import generator_pb2 as generator
from nasloop.v1 import novelty_pb2 as novelty
from nasloop.v1 import trainer_pb2 as trainer

S = TypeVar("S")  # a generated stub class


class _Client(Generic[S]):
    """A channel to one service and its stub (``Stub``: the generated stub class)."""

    Stub: Callable[[grpc.Channel], S]

    def __init__(
        self, address: str, deadlines: CallDeadlines | None = None, tls: TlsConfig | None = None
    ) -> None:
        self.address = address
        self.deadlines = deadlines or CallDeadlines()
        self.channel: grpc.Channel = connect(address, timeout_s=self.deadlines.default_s, tls=tls)
        self.stub: S = self.Stub(self.channel)

    def close(self) -> None:
        self.channel.close()


class GeneratorClient(_Client[generator_pb2_grpc.GeneratorStub]):
    Stub = generator_pb2_grpc.GeneratorStub

    def generate(self, request: generator.GenerateRequest) -> Any:
        """The stream of answers (``GeneratedCandidate``); ``.cancel()`` aborts the rest."""
        return self.stub.Generate(request, timeout=self.deadlines.generate_s)

    def render_prompt(self, spec: common.TaskSpec) -> generator.RenderPromptResponse:
        return self.stub.RenderPrompt(generator.RenderPromptRequest(spec=spec))

    def load_adapter(self, ref: common.AdapterRef) -> generator.AdapterInfo:
        request = generator.LoadAdapterRequest(name=ref.name, prefix=ref.prefix, sha256=ref.sha256)
        return self.stub.LoadAdapter(request, timeout=self.deadlines.load_adapter_s)

    def unload_adapter(self, name: str) -> None:
        self.stub.UnloadAdapter(generator.UnloadAdapterRequest(name=name))

    def list_adapters(self) -> list[generator.AdapterInfo]:
        return list(self.stub.ListAdapters(generator.ListAdaptersRequest()).adapters)

    def model_info(self) -> generator.ModelInfoResponse:
        return self.stub.ModelInfo(generator.ModelInfoRequest())


class EvaluatorClient(_Client[evaluator_pb2_grpc.EvaluatorStub]):
    Stub = evaluator_pb2_grpc.EvaluatorStub

    def evaluate(
        self,
        candidates: Sequence[common.Candidate],
        protocol: common.EvaluationProtocol,
        max_parallel: int = 0,
    ) -> Any:
        """The stream of ``EvaluationResult`` as each candidate finishes."""
        request = evaluator.EvaluateRequest(
            candidates=candidates, protocol=protocol, max_parallel=max_parallel
        )
        return self.stub.Evaluate(request, timeout=self.deadlines.evaluate_s)

    def validate(
        self, candidates: Sequence[common.Candidate], protocol: common.EvaluationProtocol
    ) -> list[evaluator.EvaluationResult]:
        request = evaluator.ValidateRequest(candidates=candidates, protocol=protocol)
        return list(self.stub.Validate(request, timeout=self.deadlines.evaluate_s).results)

    def list_datasets(self) -> list[evaluator.DatasetInfo]:
        return list(self.stub.ListDatasets(evaluator.ListDatasetsRequest()).datasets)


class NoveltyClient(_Client[novelty_pb2_grpc.NoveltyStub]):
    Stub = novelty_pb2_grpc.NoveltyStub

    def ensure_namespace(self, name: str, params: novelty.NamespaceParams) -> novelty.NamespaceInfo:
        """Create the namespace, or accept it as it is when it exists with the same parameters
        (different ones are INVALID_ARGUMENT, raised)."""
        request = novelty.CreateNamespaceRequest(name=name, params=params)
        return self.stub.CreateNamespace(request, timeout=self.deadlines.novelty_s)

    def batch_check_and_add(
        self, namespace: str, consult: Sequence[str], candidates: Sequence[common.Candidate]
    ) -> list[novelty.CheckResult]:
        """Verdicts for ``candidates`` in order; novel ones are added to ``namespace`` under
        their ids."""
        request = novelty.BatchCheckAndAddRequest(
            namespace=namespace, consult=consult, items=_items(candidates)
        )
        return list(self.stub.BatchCheckAndAdd(request, timeout=self.deadlines.novelty_s).results)

    def batch_check(
        self, namespaces: Sequence[str], candidates: Sequence[common.Candidate]
    ) -> list[novelty.CheckResult]:
        """Check-only verdicts for ``candidates`` in order against ``namespaces``; nothing is
        added."""
        request = novelty.BatchCheckRequest(
            items=[novelty.CheckRequest(code=c.code, namespaces=namespaces) for c in candidates]
        )
        return list(self.stub.BatchCheck(request, timeout=self.deadlines.novelty_s).results)

    def add(self, namespace: str, candidates: Sequence[common.Candidate]) -> int:
        """Add unconditionally, skipping ids already present (idempotent seeding)."""
        request = novelty.AddRequest(
            namespace=namespace, items=_items(candidates), skip_existing=True
        )
        return self.stub.Add(request, timeout=self.deadlines.novelty_s).added

    def get_namespace(self, name: str) -> novelty.NamespaceInfo:
        return self.stub.GetNamespace(novelty.GetNamespaceRequest(name=name))


def _items(candidates: Sequence[common.Candidate]) -> list[novelty.BatchCheckAndAddRequest.Item]:
    """The novelty index keeps a candidate's id and code: the rest stays with its record."""
    return [novelty.BatchCheckAndAddRequest.Item(id=c.id, code=c.code) for c in candidates]


class TrainerClient(_Client[trainer_pb2_grpc.TrainerStub]):
    Stub = trainer_pb2_grpc.TrainerStub

    def start_job(self, request: trainer.StartJobRequest) -> trainer.Job:
        return self.stub.StartJob(request, timeout=self.deadlines.start_job_s)

    def watch_job(self, job_id: str) -> Iterator[trainer.JobProgress]:
        """Progress until the job ends; ``.cancel()`` stops watching (not the job)."""
        return self.stub.WatchJob(
            trainer.WatchJobRequest(job_id=job_id), timeout=self.deadlines.train_s
        )

    def get_job(self, job_id: str) -> trainer.Job:
        return self.stub.GetJob(trainer.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> trainer.Job:
        return self.stub.CancelJob(trainer.CancelJobRequest(job_id=job_id))


class Services:
    """One client per service, at the addresses the controller's configuration names (with
    ``tls`` enabled: mutual TLS, this process's certificate presented)."""

    def __init__(self, cfg: ControllerConfig, tls: TlsConfig | None = None) -> None:
        self.generator = GeneratorClient(cfg.generator, cfg.deadlines, tls)
        self.evaluator = EvaluatorClient(cfg.evaluator, cfg.deadlines, tls)
        self.novelty = NoveltyClient(cfg.novelty, cfg.deadlines, tls)
        self.trainer = TrainerClient(cfg.trainer, cfg.deadlines, tls)

    def close(self) -> None:
        for c in (self.generator, self.evaluator, self.novelty, self.trainer):
            c.close()
