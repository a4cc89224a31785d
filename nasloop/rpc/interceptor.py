"""One server interceptor for every service: error translation, metrics and request logs.

Service logic raises :class:`~nasloop.rpc.errors.ServiceError` subclasses; here they become the
matching gRPC status. Any other exception becomes INTERNAL with a generic message (the
traceback goes to the log, never to the caller), so one bad request cannot crash a service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, NoReturn, Protocol, cast

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from nasloop.rpc.errors import ServiceError

log = logging.getLogger("nasloop.rpc")


class RpcMetrics:
    """Prometheus metrics per method: requests by status code, latency, errors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "nasloop_grpc_requests",
            "gRPC requests handled, by method and status code",
            ["service", "method", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "nasloop_grpc_errors",
            "gRPC requests that ended with a status other than OK",
            ["service", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "nasloop_grpc_request_seconds",
            "gRPC request latency (for streams: until the last message)",
            ["service", "method"],
            registry=registry,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
            ),
        )

    def observe(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(service, method, code.name).inc()
        self.latency.labels(service, method).observe(seconds)
        if code is not grpc.StatusCode.OK:
            self.errors.labels(service, method, code.name).inc()


def _split(full_method: str) -> tuple[str, str]:
    # "/nasloop.v1.Novelty/Check" -> ("nasloop.v1.Novelty", "Check")
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class Guard(Protocol):
    """Decides whether a call may proceed (mutual TLS: nasloop/rpc/authz.py); raises
    :class:`~nasloop.rpc.errors.PermissionDenied` if not. ``request`` is ``None`` for a
    client-streaming call."""

    def __call__(
        self, service: str, method: str, request: Any, context: grpc.ServicerContext
    ) -> None: ...


class ServiceInterceptor(grpc.ServerInterceptor):
    """``ready``: until it is set, the service's own RPCs are refused with UNAVAILABLE (health
    and reflection still answer), so no request sees state that is still being loaded.
    ``guard``: asked about every call before the service sees it (``None``: every call is let
    through, as on a plaintext loopback server)."""

    def __init__(
        self, metrics: RpcMetrics, ready: threading.Event, guard: Guard | None = None
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._guard = guard

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        gate = None if service.startswith("grpc.") else self._ready
        behaviour: Callable[..., Any] | None
        make: Callable[..., grpc.RpcMethodHandler]
        if handler.unary_unary:
            behaviour, make, stream = (
                handler.unary_unary,
                grpc.unary_unary_rpc_method_handler,
                False,
            )
        elif handler.unary_stream:
            behaviour, make, stream = (
                handler.unary_stream,
                grpc.unary_stream_rpc_method_handler,
                True,
            )
        elif handler.stream_unary:
            behaviour, make, stream = (
                handler.stream_unary,
                grpc.stream_unary_rpc_method_handler,
                False,
            )
        else:
            behaviour, make, stream = (
                handler.stream_stream,
                grpc.stream_stream_rpc_method_handler,
                True,
            )
        assert behaviour is not None  # a handler has one of the four
        request_deserializer = handler.request_deserializer
        unary_request = bool(handler.unary_unary or handler.unary_stream)
        if unary_request:
            request_deserializer = _tolerant(request_deserializer)
        call = _Call(service, method, gate, unary_request)
        wrap = self._wrap_stream if stream else self._wrap_unary
        return make(
            wrap(behaviour, call),
            request_deserializer=request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _finish(
        self, service: str, method: str, context: grpc.ServicerContext, start: float, exc: Any
    ) -> None:
        code = _code_of(context, exc)
        seconds = time.perf_counter() - start
        self._metrics.observe(service, method, code, seconds)
        if service.startswith("grpc."):
            return  # health checks and reflection: metrics only, no log noise
        # Successful calls at DEBUG (they can be thousands a second); failures at INFO.
        log.log(
            logging.DEBUG if code is grpc.StatusCode.OK else logging.INFO,
            "rpc",
            extra={
                "service": service,
                "method": method,
                "code": code.name,
                "ms": round(seconds * 1000, 3),
            },
        )

    def _abort(self, context: grpc.ServicerContext, exc: BaseException, method: str) -> NoReturn:
        if isinstance(exc, ServiceError):
            context.abort(grpc.StatusCode[exc.code], exc.message)
        log.exception("unhandled error in %s", method)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: see server log")

    @contextmanager
    def _handling(self, call: _Call, request: Any, context: grpc.ServicerContext) -> Iterator[None]:
        """Around one call: refused until ready, undecodable or not allowed; an exception turned
        into its status; metrics and the log line at the end."""
        start, exc = time.perf_counter(), None
        try:
            _refuse_until_ready(call.gate, context)
            _refuse_undecodable(request, context)
            if self._guard is not None:
                self._guard(
                    call.service, call.method, request if call.unary_request else None, context
                )
            yield
        except Exception as e:
            exc = e
            if _is_abort(context):
                raise
            self._abort(context, e, call.method)
        finally:
            self._finish(call.service, call.method, context, start, exc)

    def _wrap_unary(self, behaviour: Callable[..., Any], call: _Call) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            with self._handling(call, request, context):
                return behaviour(request, context)

        return wrapped

    def _wrap_stream(self, behaviour: Callable[..., Any], call: _Call) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._handling(call, request, context):
                yield from behaviour(request, context)

        return wrapped


class _Call(NamedTuple):
    """What the interceptor knows of a method: its names, the readiness gate, and whether its
    request is one message (the guard sees it) or a stream."""

    service: str
    method: str
    gate: threading.Event | None
    unary_request: bool


class _Undecodable:
    """Stands in for a request whose bytes did not parse (e.g. a string field not UTF-8)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # gRPC answers a deserializer exception with INTERNAL; the caller's fault is INVALID_ARGUMENT.
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:
            return _Undecodable(e)

    return deserialize


def _refuse_until_ready(gate: threading.Event | None, context: grpc.ServicerContext) -> None:
    if gate is not None and not gate.is_set():
        context.abort(
            grpc.StatusCode.UNAVAILABLE, "service is starting: its state is not loaded yet"
        )


def _refuse_undecodable(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed request (every string field must be valid UTF-8): {request.error}",
        )


class _Coded(Protocol):
    def code(self) -> grpc.StatusCode | None: ...


def _status(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    # The status set so far (grpc's ServicerContext.code(), missing from its stubs).
    return cast(_Coded, context).code()


def _is_abort(context: grpc.ServicerContext) -> bool:
    """True when the servicer already called context.abort(): its status stands."""
    code = _status(context)
    return code is not None and code is not grpc.StatusCode.OK


def _code_of(context: grpc.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    code = _status(context)
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(exc, ServiceError):
        return grpc.StatusCode[exc.code]
    if exc is not None:
        return grpc.StatusCode.INTERNAL
    if not context.is_active():
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK
