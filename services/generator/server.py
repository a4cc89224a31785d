"""gRPC servicer for the generator: messages in, the event loop's answers out."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator

import grpc

from nasloop import layout
from nasloop.config import Config
from nasloop.rpc import NotFound, Registration, ServiceError, ServiceHost
from nasloop.store import open_store
from nasloop.v1 import generator_pb2 as pb
from nasloop.v1 import generator_pb2_grpc as pb_grpc
from services.generator.adapters import AdapterRegistry
from services.generator.aio import LoopThread
from services.generator.generator import Generator

log = logging.getLogger("nasloop.generator")


class GeneratorServicer(pb_grpc.GeneratorServicer):
    def __init__(self, generator: Generator, loop: LoopThread) -> None:
        self.generator = generator
        self.loop = loop

    def Generate(
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GeneratedCandidate]:
        # Cancelling the call, or its deadline passing, aborts the answers still running.
        arrived = time.perf_counter()
        candidates, cancel = self.loop.stream(self.generator.generate(request, arrived))
        if not context.add_callback(cancel):  # the call already ended
            cancel()
        yield from candidates

    def _adapters(self) -> AdapterRegistry:
        assert self.generator.adapters is not None  # the interceptor refuses calls until started
        return self.generator.adapters

    def LoadAdapter(
        self, request: pb.LoadAdapterRequest, context: grpc.ServicerContext
    ) -> pb.AdapterInfo:
        return self.loop.run(self._adapters().load(request))

    def UnloadAdapter(
        self, request: pb.UnloadAdapterRequest, context: grpc.ServicerContext
    ) -> pb.UnloadAdapterResponse:
        self.loop.run(self._adapters().unload(request.name))
        return pb.UnloadAdapterResponse()

    def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.ServicerContext
    ) -> pb.ListAdaptersResponse:
        return pb.ListAdaptersResponse(adapters=self._adapters().list())

    def ModelInfo(
        self, request: pb.ModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfoResponse:
        return self.generator.model_info()

    def RenderPrompt(
        self, request: pb.RenderPromptRequest, context: grpc.ServicerContext
    ) -> pb.RenderPromptResponse:
        return self.generator.render_prompt(request)


def build(cfg: Config, port: int | None = None) -> tuple[ServiceHost, Generator, LoopThread]:
    """The host (not started) and the generator (not started: call ``loop.run(gen.start())``)."""
    generator = Generator(cfg.generator, open_store(cfg.store))
    loop = LoopThread()

    async def close() -> None:  # on the loop's thread, where the engine lives
        generator.close()

    def stop() -> None:
        try:
            loop.run(close(), timeout=60)
        finally:
            loop.close()

    service = Registration.of(pb, pb_grpc, "Generator", GeneratorServicer(generator, loop))
    port = cfg.generator.port if port is None else port
    return ServiceHost.of("generator", cfg, port, service, on_stop=stop), generator, loop


def serve(cfg: Config) -> None:
    """Answer health at once (NOT_SERVING), start the engine, then serve until SIGTERM.

    If the engine dies, the service turns NOT_SERVING, stops, and exits with status 1 (so that
    a supervisor such as Kubernetes restarts it)."""
    host, generator, loop = build(cfg)

    def failed() -> None:
        host.set_serving(False)
        threading.Thread(target=host.stop, name="shutdown", daemon=True).start()

    generator.on_failure = failed
    host.install_signal_handlers()
    host.start()
    try:
        loop.run(generator.start())
    except ServiceError as e:  # no such model, a corrupt one: say so, without a traceback
        hint = ""
        if isinstance(e, NotFound) and cfg.generator.model.startswith(layout.bootstrap_model("")):
            hint = " (build it with: nasloop bootstrap-model)"
        log.error("the engine did not start", extra={"error": e.message})
        print(f"nasloop: generator: {e.message}{hint}", file=sys.stderr)
        host.stop(0)
        sys.exit(2)
    except Exception:
        log.exception("the engine did not start")
        host.stop(0)
        raise
    host.set_serving()
    host.wait()
    if generator.failed is not None:
        sys.exit(1)
