"""The chart's run-start hook (deploy/helm/nasloop/files/start_run.py) against a controller
that answers over gRPC: it waits for SERVING, sends the spec, and leaves an existing run alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from chart import CHART
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc

SCRIPT = CHART / "files" / "start_run.py"
ROOT = CHART.parents[2]


class FakeController(pb_grpc.ControllerServicer):
    def __init__(self) -> None:
        self.specs: list[pb.RunSpec] = []
        self.lock = threading.Lock()

    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext) -> pb.Run:
        with self.lock:
            if any(s.name == request.spec.name for s in self.specs):
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"run {request.spec.name} exists")
            self.specs.append(request.spec)
        return pb.Run(name=request.spec.name, spec=request.spec, state=pb.RUN_STATE_PENDING)


@pytest.fixture
def controller() -> Iterator[tuple[FakeController, health.HealthServicer, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    fake, probe = FakeController(), health.HealthServicer()
    pb_grpc.add_ControllerServicer_to_server(fake, server)
    health_pb2_grpc.add_HealthServicer_to_server(probe, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, probe, f"127.0.0.1:{port}"
    server.stop(0)


def start_run(spec: dict, address: str, tmp_path: Path, timeout_s: str = "20") -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), address, timeout_s],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_waits_for_serving_then_starts_the_run_once(controller, tmp_path: Path) -> None:
    fake, probe, address = controller
    probe.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    threading.Timer(1.5, probe.set, ("", health_pb2.HealthCheckResponse.SERVING)).start()
    spec = {"name": "paper-1", "preset": "paper", "cycles": 22, "base_model": "org/model"}
    assert "run paper-1 started (RUN_STATE_PENDING)" in start_run(spec, address, tmp_path)
    (sent,) = fake.specs
    assert (sent.name, sent.preset, sent.cycles, sent.base_model) == (
        "paper-1",
        "paper",
        22,
        "org/model",
    )
    # An upgrade runs the hook again: the existing run is left alone, and that is success.
    assert "exists already" in start_run(spec, address, tmp_path)
    assert len(fake.specs) == 1


def test_a_controller_that_never_serves_fails_the_hook(controller, tmp_path: Path) -> None:
    _, probe, address = controller
    probe.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "r"}))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), address, "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode != 0 and "not serving" in out.stderr
