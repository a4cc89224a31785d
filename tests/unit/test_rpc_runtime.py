"""The shared gRPC runtime: health, errors, metrics, deadlines, retries, limits, shutdown.

A small service made of generic handlers stands in for a real one, over a real loopback socket.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nasloop.config import ServerConfig
from nasloop.rpc import InvalidArgument, NotFound, Registration, ServiceHost, connect
from nasloop.v1 import novelty_pb2

SERVICE = "test.Toy"


class Toy:
    def __init__(self) -> None:
        self.flaky_left = 0
        self.calls = 0

    def echo(self, request: novelty_pb2.CheckRequest, context) -> novelty_pb2.CheckResult:
        self.calls += 1
        code = request.code
        if code == "not-found":
            raise NotFound("no such thing")
        if code == "invalid":
            raise InvalidArgument("bad thing")
        if code == "boom":
            raise RuntimeError("secret internals")
        if code.startswith("sleep:"):
            time.sleep(float(code.split(":")[1]))
        if code == "flaky" and self.flaky_left > 0:
            self.flaky_left -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return novelty_pb2.CheckResult(id=code, novel=True)

    def last(
        self, requests: Iterator[novelty_pb2.CheckRequest], context
    ) -> novelty_pb2.CheckResult:
        return self.echo(list(requests)[-1], context)

    def count(
        self, request: novelty_pb2.CheckRequest, context
    ) -> Iterator[novelty_pb2.CheckResult]:
        for i in range(3):
            yield novelty_pb2.CheckResult(id=str(i))
        if request.code == "fail-late":
            raise InvalidArgument("failed after three")


def _add(toy: Toy, server: grpc.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(
            toy.echo,
            request_deserializer=novelty_pb2.CheckRequest.FromString,
            response_serializer=novelty_pb2.CheckResult.SerializeToString,
        ),
        "Count": grpc.unary_stream_rpc_method_handler(
            toy.count,
            request_deserializer=novelty_pb2.CheckRequest.FromString,
            response_serializer=novelty_pb2.CheckResult.SerializeToString,
        ),
        "Last": grpc.stream_unary_rpc_method_handler(
            toy.last,
            request_deserializer=novelty_pb2.CheckRequest.FromString,
            response_serializer=novelty_pb2.CheckResult.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
def toy_host() -> Iterator[tuple[ServiceHost, Toy]]:
    toy = Toy()
    cfg = ServerConfig(host="127.0.0.1", metrics_port=0, max_message_bytes=64 * 1024, grace_s=2)
    host = ServiceHost("toy", cfg, 0, [Registration(_add, toy, SERVICE)])
    host.start()
    host.set_serving()
    yield host, toy
    host.stop(0)


def _echo(channel: grpc.Channel, code: str, **kw) -> novelty_pb2.CheckResult:
    call = channel.unary_unary(
        f"/{SERVICE}/Echo",
        request_serializer=novelty_pb2.CheckRequest.SerializeToString,
        response_deserializer=novelty_pb2.CheckResult.FromString,
    )
    return call(novelty_pb2.CheckRequest(code=code), **kw)


def _last(channel: grpc.Channel, code: str, **kw) -> novelty_pb2.CheckResult:
    """Echo's answer through a stream-unary call (the last of the requests streamed)."""
    call = channel.stream_unary(
        f"/{SERVICE}/Last",
        request_serializer=novelty_pb2.CheckRequest.SerializeToString,
        response_deserializer=novelty_pb2.CheckResult.FromString,
    )
    return call(iter([novelty_pb2.CheckRequest(code=code)]), **kw)


def test_not_serving_until_ready(toy_host) -> None:
    """Until set_serving(), health says NOT_SERVING and the service's RPCs are refused."""
    host, toy = toy_host
    host.set_serving(False)
    with grpc.insecure_channel(host.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            _echo(ch, "early", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in info.value.details() and toy.calls == 0
        host.set_serving()
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert _echo(ch, "ready", timeout=5).id == "ready"


def test_service_errors_map_to_status_and_server_keeps_serving(toy_host) -> None:
    host, _ = toy_host
    with connect(host.address) as ch:
        for code, status, text in [
            ("not-found", grpc.StatusCode.NOT_FOUND, "no such thing"),
            ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "bad thing"),
            ("boom", grpc.StatusCode.INTERNAL, "internal error"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                _echo(ch, code)
            assert info.value.code() == status
            assert text in info.value.details()
            assert "secret internals" not in info.value.details()
        assert _echo(ch, "fine").id == "fine"


def test_stream_error_after_messages(toy_host) -> None:
    host, _ = toy_host
    with connect(host.address) as ch:
        call = ch.unary_stream(
            f"/{SERVICE}/Count",
            request_serializer=novelty_pb2.CheckRequest.SerializeToString,
            response_deserializer=novelty_pb2.CheckResult.FromString,
        )
        assert [r.id for r in call(novelty_pb2.CheckRequest(code="ok"))] == ["0", "1", "2"]
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for r in call(novelty_pb2.CheckRequest(code="fail-late")):
                got.append(r.id)
        assert got == ["0", "1", "2"]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_count_requests_by_code(toy_host) -> None:
    host, _ = toy_host
    with connect(host.address) as ch:
        _echo(ch, "a")
        with pytest.raises(grpc.RpcError):
            _echo(ch, "not-found")
    body = urllib.request.urlopen(f"http://127.0.0.1:{host.metrics_port}/metrics").read().decode()
    assert 'nasloop_grpc_requests_total{code="OK",method="Echo",service="test.Toy"} 1.0' in body
    assert (
        'nasloop_grpc_errors_total{code="NOT_FOUND",method="Echo",service="test.Toy"} 1.0' in body
    )
    assert "nasloop_grpc_request_seconds_bucket" in body


@pytest.mark.parametrize("call", [_echo, _last], ids=["unary-unary", "stream-unary"])
def test_default_deadline_applies_to_unary_calls(toy_host, call) -> None:
    host, _ = toy_host
    with connect(host.address, timeout_s=0.2) as ch:
        with pytest.raises(grpc.RpcError) as info:
            call(ch, "sleep:1")
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert call(ch, "sleep:0.3", timeout=5).id == "sleep:0.3"  # an explicit one wins


def test_client_retries_unavailable(toy_host) -> None:
    host, toy = toy_host
    toy.flaky_left = 2
    with connect(host.address) as ch:
        assert _echo(ch, "flaky").id == "flaky"
    assert toy.calls == 3
    toy.flaky_left, toy.calls = 10, 0
    with connect(host.address, attempts=3) as ch, pytest.raises(grpc.RpcError) as info:
        _echo(ch, "flaky")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert toy.calls == 3


def test_malformed_request_is_invalid_argument(toy_host) -> None:
    host, _ = toy_host
    with grpc.insecure_channel(host.address) as ch:
        raw = ch.unary_unary(f"/{SERVICE}/Echo")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\x0a\x02\xff\xfe", timeout=5)  # field 1 (code): invalid UTF-8
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in info.value.details()


def test_message_size_limit(toy_host) -> None:
    host, _ = toy_host
    with grpc.insecure_channel(host.address) as ch, pytest.raises(grpc.RpcError) as info:
        _echo(ch, "x" * 100_000, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_graceful_stop_lets_calls_in_flight_finish(toy_host) -> None:
    host, _ = toy_host
    result: dict[str, object] = {}
    with connect(host.address) as ch:
        t = threading.Thread(target=lambda: result.update(r=_echo(ch, "sleep:0.5")))
        t.start()
        time.sleep(0.2)
        stopped = time.monotonic()
        host.stop()  # grace_s=2
        t.join()
        assert result["r"].id == "sleep:0.5"
        assert time.monotonic() - stopped < 2
        with pytest.raises(grpc.RpcError):
            _echo(ch, "after", timeout=1)
