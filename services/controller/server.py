"""gRPC servicer for the controller: messages in, run manager calls, messages out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from nasloop.config import Config
from nasloop.rpc import (
    FailedPrecondition,
    InvalidArgument,
    Registration,
    ServiceHost,
    call_active,
)
from nasloop.rpc.tls import CYCLE, CycleSigner, Identity
from nasloop.store import open_store
from nasloop.store.remote import chunks
from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc
from services.controller.cycle_store import CallerIdentity, CycleStoreGate, joined
from services.controller.loop.events import Event
from services.controller.loop.state import RunState
from services.controller.loop.summary import CycleSummary
from services.controller.runs import RunManager
from services.controller.runspec import (
    RunSpec,
    SpecError,
    dump_spec,
    load_spec,
    spec_from_proto,
    spec_to_proto,
)

if TYPE_CHECKING:
    from services.controller.kube import CycleJobs

log = logging.getLogger("nasloop.controller")

CYCLE_STORE = pb.DESCRIPTOR.services_by_name["CycleStore"].full_name
RUN_STATES = {
    "pending": pb.RUN_STATE_PENDING,
    "running": pb.RUN_STATE_RUNNING,
    "stopping": pb.RUN_STATE_STOPPING,
    "stopped": pb.RUN_STATE_STOPPED,
    "succeeded": pb.RUN_STATE_SUCCEEDED,
    "failed": pb.RUN_STATE_FAILED,
}
PHASES = {
    "generate": pb.CYCLE_PHASE_GENERATE,
    "novelty": pb.CYCLE_PHASE_NOVELTY,
    "select": pb.CYCLE_PHASE_SELECT,
    "fine_tune": pb.CYCLE_PHASE_FINE_TUNE,
    "publish": pb.CYCLE_PHASE_PUBLISH,
    "hot_load": pb.CYCLE_PHASE_HOT_LOAD,
    "summary": pb.CYCLE_PHASE_DONE,
    "done": pb.CYCLE_PHASE_DONE,
    "baseline": pb.CYCLE_PHASE_BASELINE,
}


def _timestamp(iso: str) -> Timestamp:
    ts = Timestamp()
    if iso:
        ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def summary_to_pb(s: CycleSummary) -> pb.CycleSummary:
    return s.to_proto()


def run_to_pb(
    state: RunState,
    spec: RunSpec,
    cycles: list[CycleSummary],
    baseline: CycleSummary | None = None,
) -> pb.Run:
    out = pb.Run(
        name=state.name,
        spec=spec_to_proto(spec),
        state=RUN_STATES.get(state.state, pb.RUN_STATE_UNSPECIFIED),
        current_cycle=state.cycle,
        current_phase=PHASES.get(state.phase, pb.CYCLE_PHASE_UNSPECIFIED),
        cycles=[summary_to_pb(s) for s in cycles],
        error=state.error,
        created=_timestamp(state.created),
        updated=_timestamp(state.updated),
        cycle_job=state.cycle_job,
        cycles_done=state.cycles_done,
        spec_yaml=dump_spec(spec),
    )
    if baseline is not None:
        out.baseline.CopyFrom(summary_to_pb(baseline))
    return out


def event_to_pb(e: Event) -> pb.CycleEvent:
    out = pb.CycleEvent(
        run=e.run,
        cycle=e.cycle,
        phase=PHASES.get(e.step, pb.CYCLE_PHASE_UNSPECIFIED),
        message=e.message,
        counts=e.counts,
    )
    out.at.GetCurrentTime()
    if e.candidate is not None and e.candidate.evaluation is not None:
        out.candidate.CopyFrom(e.candidate.evaluation.to_proto(e.candidate.id, e.candidate.index))
    elif e.training is not None:
        out.training.CopyFrom(e.training)
    elif e.summary is not None:
        out.summary.CopyFrom(summary_to_pb(e.summary))
    return out


def spec_from_request(request: pb.StartRunRequest) -> RunSpec:
    try:
        extra = spec_from_proto(request.spec)
        return load_spec(
            spec_yaml=request.spec_yaml or None,
            extra=extra,
            overrides=list(request.overrides),
        )
    except SpecError as e:
        raise InvalidArgument(str(e)) from None


class ControllerServicer(pb_grpc.ControllerServicer):
    def __init__(self, runs: RunManager) -> None:
        self.runs = runs

    def _run(self, name: str) -> pb.Run:
        state, spec, cycles = self.runs.get(name)
        return run_to_pb(state, spec, cycles, self.runs.baseline(name, state))

    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext) -> pb.Run:
        state = self.runs.start(spec_from_request(request))
        return self._run(state.name)

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.Run:
        return self._run(request.name)

    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        return pb.ListRunsResponse(runs=[self._run(s.name) for s in self.runs.list()])

    def StopRun(self, request: pb.StopRunRequest, context: grpc.ServicerContext) -> pb.Run:
        self.runs.stop(request.name, request.now)
        return self._run(request.name)

    def ResumeRun(self, request: pb.ResumeRunRequest, context: grpc.ServicerContext) -> pb.Run:
        self.runs.resume(request.name)
        return self._run(request.name)

    def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.CycleEvent]:
        for event in self.runs.watch(request.name, request.from_cycle, call_active(context)):
            yield event_to_pb(event)

    def GetCycle(
        self, request: pb.GetCycleRequest, context: grpc.ServicerContext
    ) -> pb.CycleSummary:
        return summary_to_pb(self.runs.cycle(request.run, request.cycle))


class CycleStoreServicer(pb_grpc.CycleStoreServicer):
    """The store for cycle Jobs (cluster mode): messages in, :class:`CycleStoreGate`, out;
    with TLS on, also each cycle pod's identity (``signer``: the cycle CA)."""

    def __init__(self, gate: CycleStoreGate, signer: CycleSigner | None = None) -> None:
        self.gate = gate
        self.signer = signer

    def SignCycleCertificate(
        self, request: pb.CycleCertificateRequest, context: grpc.ServicerContext
    ) -> pb.CycleCertificate:
        if self.signer is None:
            raise FailedPrecondition(
                "this controller signs no cycle identities (tls is off, or it has no "
                "tls.cycle_ca_key_file)"
            )
        scope = self.gate.scope(context.peer())
        pem, uri = self.signer.sign(request.csr_pem, Identity(CYCLE, scope.run, scope.cycle))
        log.info("signed a cycle identity", extra={"identity": uri})
        return pb.CycleCertificate(certificate_pem=pem, identity=uri)

    def GetObject(
        self, request: pb.ObjectKey, context: grpc.ServicerContext
    ) -> Iterator[pb.ObjectChunk]:
        data, sha = self.gate.get(context.peer(), request.key)
        for i, piece in enumerate(chunks(data)):
            if i == 0:
                yield pb.ObjectChunk(key=request.key, data=piece, size=len(data), sha256=sha)
            else:
                yield pb.ObjectChunk(data=piece)

    def PutObject(
        self, request_iterator: Iterator[pb.ObjectChunk], context: grpc.ServicerContext
    ) -> pb.ObjectStat:
        peer = context.peer()
        self.gate.scope(peer)  # refuse a stranger before reading what it sends
        key, data = joined((c.key, c.data) for c in request_iterator)
        info = self.gate.put(peer, key, data)
        return pb.ObjectStat(key=key, exists=True, size=info.size, sha256=info.sha256)

    def StatObject(self, request: pb.ObjectKey, context: grpc.ServicerContext) -> pb.ObjectStat:
        return pb.ObjectStat(key=request.key, exists=self.gate.exists(context.peer(), request.key))

    def ListObjects(
        self, request: pb.ListObjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListObjectsResponse:
        return pb.ListObjectsResponse(keys=self.gate.list(context.peer(), request.prefix))

    def DeleteObject(self, request: pb.ObjectKey, context: grpc.ServicerContext) -> pb.ObjectStat:
        self.gate.delete(context.peer(), request.key)
        return pb.ObjectStat(key=request.key, exists=False)


def build(
    cfg: Config, port: int | None = None, cycle_jobs: CycleJobs | None = None
) -> tuple[ServiceHost, RunManager]:
    """The controller's server; in cluster mode also the store its cycle Jobs use.
    ``cycle_jobs`` replaces the Kubernetes client made from the environment (tests)."""
    if cycle_jobs is None and cfg.controller.mode == "kubernetes":
        cycle_jobs = _cycle_jobs(cfg)
    store = open_store(cfg.store)
    runs = RunManager(cfg, store, cycle_jobs=cycle_jobs)
    services = [Registration.of(pb, pb_grpc, "Controller", ControllerServicer(runs))]
    if cycle_jobs is not None:
        identity = CallerIdentity(cycle_jobs.cycle_of_pod_ip)
        gate = CycleStoreGate(store, identity, on_write=runs.observe)
        signer = _cycle_signer(cfg)
        servicer = CycleStoreServicer(gate, signer)
        services.append(Registration.of(pb, pb_grpc, "CycleStore", servicer))
    host = ServiceHost(
        "controller",
        cfg.server,
        cfg.controller.port if port is None else port,
        services,
        on_stop=runs.close,
        tls=cfg.tls,
        # Cycle pods have no certificate until the controller signs one: with TLS on, they
        # reach the CycleStore (only it) on a port that asks for none.
        cert_free_port=cfg.controller.cycle_port if cycle_jobs is not None else None,
        cert_free_services=frozenset({CYCLE_STORE}),
    )
    return host, runs


def _cycle_signer(cfg: Config) -> CycleSigner | None:
    if not cfg.tls.enabled or not cfg.tls.cycle_ca_key_file:
        return None
    # A cycle's identity outlives its Job's deadline by an hour, never the Job's many runs.
    return CycleSigner(cfg.tls, cfg.controller.kubernetes.active_deadline_s + 3600)


def _cycle_jobs(cfg: Config) -> CycleJobs:
    from nasloop.kubeapi import kube_api_client
    from services.controller.kube import CycleJobs

    return CycleJobs(kube_api_client(), cfg)


def serve(cfg: Config) -> None:
    """Run until SIGTERM; runs that were active when the last controller stopped resume."""
    host, runs = build(cfg)
    host.install_signal_handlers()
    host.start()
    host.set_serving()
    resumed = runs.recover()
    if resumed:
        log.info("resumed runs", extra={"runs": resumed})
    host.wait()
