"""The gRPC server bootstrap shared by every service.

A :class:`ServiceHost` gives a service: the standard health service (NOT_SERVING until the
service says it is ready), server reflection (``grpcurl`` works without proto files), a
Prometheus ``/metrics`` endpoint, the common interceptor (errors, metrics, logs, and with mutual
TLS on, each call authorised by the caller's certificate), message-size limits, and graceful
shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from nasloop.config import Config, ServerConfig, TlsConfig
from nasloop.rpc.interceptor import RpcMetrics, ServiceInterceptor

log = logging.getLogger("nasloop.server")


@dataclass(frozen=True)
class Registration:
    """One gRPC service to host: the generated ``add_*Servicer_to_server`` and its servicer."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any
    full_name: str  # e.g. "nasloop.v1.Novelty" (from the pb2 DESCRIPTOR)

    @classmethod
    def of(cls, pb: ModuleType, pb_grpc: ModuleType, name: str, servicer: Any) -> Registration:
        """Service ``name`` (e.g. "Novelty") of the generated modules ``pb``/``pb_grpc``."""
        return cls(
            getattr(pb_grpc, f"add_{name}Servicer_to_server"),
            servicer,
            pb.DESCRIPTOR.services_by_name[name].full_name,
        )


def call_active(context: grpc.ServicerContext) -> threading.Event:
    """Set while the call lasts; cleared when it ends (cancelled by the client, its deadline
    passed, or done)."""
    active = threading.Event()
    active.set()
    context.add_callback(active.clear)
    return active


class ServiceHost:
    @classmethod
    def of(
        cls,
        name: str,
        cfg: Config,
        port: int,
        service: Registration,
        on_stop: Callable[[], None] | None = None,
        server: ServerConfig | None = None,
    ) -> ServiceHost:
        """A host of one service: ``cfg``'s server settings (or ``server``) and TLS."""
        return cls(name, server or cfg.server, port, [service], on_stop=on_stop, tls=cfg.tls)

    def __init__(
        self,
        name: str,
        cfg: ServerConfig,
        port: int,
        registrations: Sequence[Registration],
        on_stop: Callable[[], None] | None = None,
        tls: TlsConfig | None = None,
        cert_free_port: int | None = None,
        cert_free_services: frozenset[str] = frozenset(),
    ) -> None:
        """``tls`` enabled: the port takes mutual TLS only, and every call is authorised by the
        caller's certificate (nasloop/rpc/authz.py); otherwise plaintext, every caller let in.
        With ``tls``, ``cert_free_port`` is a second port that asks for no client certificate,
        where only ``cert_free_services`` answer (they must know their callers another way)."""
        self.name = name
        self.tls = tls if tls is not None and tls.enabled else None
        self.requested_cert_free_port = cert_free_port if self.tls is not None else None
        self.cert_free_port: int | None = None
        self.health_port: int | None = None
        self.cfg = cfg
        self.requested_port = port
        self.registrations = list(registrations)
        self.on_stop = on_stop
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.registry = CollectorRegistry()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._metrics_server: Any = None
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._stop_lock = threading.Lock()
        limit = cfg.max_message_bytes
        guard = None
        if self.tls is not None:
            from nasloop.rpc.authz import CallerGuard
            from nasloop.rpc.tls import Authenticator

            guard = CallerGuard(Authenticator(self.tls), anonymous=cert_free_services)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix=name),
            interceptors=[ServiceInterceptor(RpcMetrics(self.registry), self._ready, guard)],
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        for r in self.registrations:
            r.add_to_server(r.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [r.full_name for r in self.registrations]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> int:
        """Bind and answer health and reflection; the service's own RPCs wait for
        :meth:`set_serving`. Returns the bound port."""
        address = f"{self.cfg.host}:{self.requested_port}"
        try:
            if self.tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                from nasloop.rpc.tls import server_credentials

                self.port = self.server.add_secure_port(address, server_credentials(self.tls))
                if self.cfg.health_port is not None:
                    address = f"{self.cfg.host}:{self.cfg.health_port}"
                    self.health_port = self.server.add_insecure_port(address)
                if self.requested_cert_free_port is not None:
                    address = f"{self.cfg.host}:{self.requested_cert_free_port}"
                    self.cert_free_port = self.server.add_secure_port(
                        address, server_credentials(self.tls, client_auth=False)
                    )
        except RuntimeError as e:
            raise RuntimeError(f"{self.name}: cannot bind {address}: {e}") from e
        self.server.start()
        if self.cfg.metrics_port is not None:
            self._metrics_server, _ = start_http_server(
                self.cfg.metrics_port, addr=self.cfg.host, registry=self.registry
            )
            self.metrics_port = self._metrics_server.server_port
        log.info(
            "listening",
            extra={"service": self.name, "port": self.port, "metrics_port": self.metrics_port},
        )
        return self.port

    def set_serving(self, serving: bool = True) -> None:
        """Health SERVING and the service's RPCs accepted (until then they get UNAVAILABLE)."""
        if serving:
            self._ready.set()
        else:
            self._ready.clear()
        self._set_status(
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def _set_status(self, status: int) -> None:
        self.health.set("", status)
        for r in self.registrations:
            self.health.set(r.full_name, status)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let calls in flight finish within ``grace``, then clean up."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.cfg.grace_s if grace is None else grace
            log.info("stopping", extra={"service": self.name, "grace_s": grace})
            self.health.enter_graceful_shutdown()
            self.server.stop(grace).wait()
            if self.on_stop is not None:
                self.on_stop()
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
                self._metrics_server.server_close()
            self._stopped.set()
            log.info("stopped", extra={"service": self.name})

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT trigger a graceful stop (main thread only)."""

        def handler(signum: int, _frame: Any) -> None:
            log.info("signal", extra={"service": self.name, "signal": signal.Signals(signum).name})
            threading.Thread(target=self.stop, name="shutdown", daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def serve(self, prepare: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM: bind (health answers NOT_SERVING), ``prepare`` (restore state,
        start workers), report SERVING, then block until stopped."""
        self.install_signal_handlers()
        self.start()
        if prepare is not None:
            prepare()
        self.set_serving()
        self.wait()

    def wait(self) -> None:
        """Block until the host has fully stopped."""
        while not self._stopped.wait(0.5):
            pass
