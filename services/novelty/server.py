"""gRPC servicer for the novelty index: messages in, engine calls, messages out."""

from __future__ import annotations

import gc
import logging

import grpc

from nasloop.config import Config
from nasloop.fingerprint import TokenMode
from nasloop.messages import message_from
from nasloop.rpc import InvalidArgument, Registration, ServiceHost
from nasloop.store import open_store
from nasloop.v1 import novelty_pb2 as pb
from nasloop.v1 import novelty_pb2_grpc as pb_grpc
from services.novelty.engine import Namespace, NoveltyEngine, Verdict
from services.novelty.index import IndexParams

log = logging.getLogger("nasloop.novelty")

_MODES = {
    pb.TOKEN_MODE_UNSPECIFIED: TokenMode.CANONICAL,
    pb.TOKEN_MODE_CANONICAL: TokenMode.CANONICAL,
    pb.TOKEN_MODE_RAW: TokenMode.RAW,
}
_MODE_TO_PB = {TokenMode.CANONICAL: pb.TOKEN_MODE_CANONICAL, TokenMode.RAW: pb.TOKEN_MODE_RAW}


def params_from_pb(msg: pb.NamespaceParams, defaults: IndexParams) -> IndexParams:
    if msg.mode not in _MODES:
        raise InvalidArgument(f"unknown token mode {msg.mode}")
    try:
        return IndexParams(
            mode=_MODES[msg.mode],
            shingle_size=msg.shingle_size or defaults.shingle_size,
            num_perm=msg.num_perm or defaults.num_perm,
            threshold=msg.threshold or defaults.threshold,
        )
    except ValueError as e:
        raise InvalidArgument(f"invalid namespace parameters: {e}") from e


def params_to_pb(p: IndexParams) -> pb.NamespaceParams:
    return pb.NamespaceParams(
        mode=_MODE_TO_PB[p.mode],
        shingle_size=p.shingle_size,
        num_perm=p.num_perm,
        threshold=p.threshold,
    )


def namespace_to_pb(ns: Namespace) -> pb.NamespaceInfo:
    return pb.NamespaceInfo(
        name=ns.name,
        params=params_to_pb(ns.params),
        entries=len(ns.index),
        last_seq=ns.seq,
        snapshot_seq=ns.snapshot_seq,
    )


def verdict_to_pb(v: Verdict) -> pb.CheckResult:
    return message_from(pb.CheckResult, v)


class NoveltyServicer(pb_grpc.NoveltyServicer):
    def __init__(self, engine: NoveltyEngine) -> None:
        self.engine = engine

    def CreateNamespace(
        self, request: pb.CreateNamespaceRequest, context: grpc.ServicerContext
    ) -> pb.NamespaceInfo:
        params = params_from_pb(request.params, self.engine.default_params())
        return namespace_to_pb(self.engine.create_namespace(request.name, params))

    def GetNamespace(
        self, request: pb.GetNamespaceRequest, context: grpc.ServicerContext
    ) -> pb.NamespaceInfo:
        return namespace_to_pb(self.engine.namespace(request.name))

    def ListNamespaces(
        self, request: pb.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> pb.ListNamespacesResponse:
        return pb.ListNamespacesResponse(
            namespaces=[namespace_to_pb(ns) for ns in self.engine.namespaces()]
        )

    def DeleteNamespace(
        self, request: pb.DeleteNamespaceRequest, context: grpc.ServicerContext
    ) -> pb.DeleteNamespaceResponse:
        return pb.DeleteNamespaceResponse(
            removed_entries=self.engine.delete_namespace(request.name)
        )

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResult:
        return verdict_to_pb(
            self.engine.check(request.code, list(request.namespaces), request.exhaustive)
        )

    def CheckAndAdd(
        self, request: pb.CheckAndAddRequest, context: grpc.ServicerContext
    ) -> pb.CheckResult:
        return verdict_to_pb(
            self.engine.check_and_add(
                request.code, request.id, request.namespace, list(request.consult)
            )
        )

    def BatchCheck(
        self, request: pb.BatchCheckRequest, context: grpc.ServicerContext
    ) -> pb.BatchCheckResponse:
        items = [(i.code, list(i.namespaces), i.exhaustive) for i in request.items]
        return pb.BatchCheckResponse(
            results=[verdict_to_pb(v) for v in self.engine.batch_check(items)]
        )

    def BatchCheckAndAdd(
        self, request: pb.BatchCheckAndAddRequest, context: grpc.ServicerContext
    ) -> pb.BatchCheckResponse:
        items = [(i.id, i.code) for i in request.items]
        verdicts = self.engine.batch_check_and_add(items, request.namespace, list(request.consult))
        return pb.BatchCheckResponse(results=[verdict_to_pb(v) for v in verdicts])

    def Add(self, request: pb.AddRequest, context: grpc.ServicerContext) -> pb.AddResponse:
        added, last = self.engine.add(
            [(i.id, i.code) for i in request.items], request.namespace, request.skip_existing
        )
        return pb.AddResponse(added=added, last_seq=last)

    def Remove(self, request: pb.RemoveRequest, context: grpc.ServicerContext) -> pb.RemoveResponse:
        removed, not_found = self.engine.remove(request.namespace, list(request.ids))
        return pb.RemoveResponse(removed=removed, not_found=not_found)

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        namespaces = self.engine.namespaces()
        c = self.engine.counters
        return pb.StatsResponse(
            namespaces=[namespace_to_pb(ns) for ns in namespaces],
            total_entries=sum(len(ns.index) for ns in namespaces),
            checks=c.checks,
            adds=c.adds,
            rejected_duplicates=c.rejected_duplicates,
        )

    def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.ServicerContext
    ) -> pb.SnapshotResponse:
        done = self.engine.snapshot(list(request.namespaces))
        return pb.SnapshotResponse(namespaces=[namespace_to_pb(ns) for ns in done])

    def Fingerprint(
        self, request: pb.FingerprintRequest, context: grpc.ServicerContext
    ) -> pb.FingerprintResponse:
        params = params_from_pb(request.params, self.engine.default_params())
        toks, count = self.engine.tokens(request.code, params)
        return pb.FingerprintResponse(tokens=toks, shingles=count)


def build(cfg: Config, port: int | None = None) -> tuple[ServiceHost, NoveltyEngine]:
    """The novelty service, restored from the store and ready to start."""
    engine = NoveltyEngine(open_store(cfg.store), cfg.novelty)
    server_cfg = cfg.server
    if cfg.novelty.handler_threads:
        server_cfg = server_cfg.model_copy(update={"max_workers": cfg.novelty.handler_threads})
    service = Registration.of(pb, pb_grpc, "Novelty", NoveltyServicer(engine))
    port = cfg.novelty.port if port is None else port
    host = ServiceHost.of("novelty", cfg, port, service, on_stop=engine.close, server=server_cfg)
    return host, engine


def serve(cfg: Config) -> None:
    """Run until SIGTERM: bind, restore state, then report SERVING."""
    host, engine = build(cfg)

    def restore() -> None:
        engine.open()
        # The restored index is millions of long-lived objects: keep them out of every future
        # garbage collection, which would otherwise pause requests for tens of milliseconds.
        gc.collect()
        gc.freeze()

    host.serve(restore)
