"""Client helpers shared by every caller of a nasloop service.

``connect()`` returns a channel that retries calls failing with UNAVAILABLE (gRPC's own retry
policy, with exponential backoff) and puts a default deadline on unary calls that set none.
Streaming calls get no default deadline: a watch may legitimately last for hours.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from nasloop.config import TlsConfig

DEFAULT_TIMEOUT_S = 30.0


def _service_config(attempts: int) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],  # every method of every service
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class _CallDetails(grpc.ClientCallDetails):
    """A call's details with a deadline put on."""

    def __init__(self, d: grpc.ClientCallDetails, timeout: float) -> None:
        self.method = d.method
        self.timeout = timeout
        self.metadata = d.metadata
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class _DefaultDeadline(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return d if d.timeout is not None else _CallDetails(d, self._timeout_s)

    # The continuations return the call (a grpc.Call and Future), typed only in grpc's stubs.
    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(details), request)

    # The same for a stream of requests: grpc passes their iterator (the stubs name that
    # parameter request_iterator) where a unary call's request goes.
    intercept_stream_unary = intercept_unary_unary  # type: ignore[assignment]  # param name differs


def connect(
    target: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = 5,
    max_message_bytes: int = 64 * 1024 * 1024,
    tls: TlsConfig | None = None,
    client_cert: bool = True,
) -> grpc.Channel:
    """A channel to ``target`` ("host:port") with retries and default deadlines: plaintext, or
    with ``tls`` enabled mutual TLS (the server checked against the CA, this process's
    certificate presented, unless ``client_cert`` is off)."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(attempts)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if tls is not None and tls.enabled:
        from nasloop.rpc.tls import channel_credentials

        credentials = channel_credentials(tls, client_cert)
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _DefaultDeadline(timeout_s))


def wait_until_serving(channel: grpc.Channel, service: str = "", timeout_s: float = 60.0) -> None:
    """Poll the standard health service until it answers SERVING; raise TimeoutError if not."""
    # The standard health service's Check (its stub is untyped in types-grpcio-health-checking).
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        time.sleep(0.1)
    raise TimeoutError(f"service {service or '<server>'} not serving after {timeout_s}s ({last})")
