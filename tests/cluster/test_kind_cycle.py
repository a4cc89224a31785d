"""One tiny cycle inside the kind cluster, started and checked through the controller's gRPC
API: run only by ``make kind-e2e`` (deploy/kind/e2e.sh), marked ``cluster``.

Environment (e2e.sh sets it): ``NASLOOP_E2E_CONTROLLER`` (host:port of the controller, a
port-forward) and ``NASLOOP_E2E_MODEL`` (the base model the chart's generator serves)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid

import grpc
import pytest

from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc

pytestmark = pytest.mark.cluster
ENDED = {pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_STOPPED}


@pytest.fixture(scope="module")
def controller() -> pb_grpc.ControllerStub:
    address = os.environ.get("NASLOOP_E2E_CONTROLLER")
    if not address:
        pytest.skip("NASLOOP_E2E_CONTROLLER is not set (make kind-e2e sets it)")
    channel = _channel(address)
    grpc.channel_ready_future(channel).result(timeout=60)
    return pb_grpc.ControllerStub(channel)


def _channel(address: str) -> grpc.Channel:
    """Plaintext, or the chart's mutual TLS with the release's operator certificate (its Secret,
    read with kubectl from the namespace and release e2e.sh names)."""
    account = os.environ.get("NASLOOP_EVALUATOR__KUBERNETES__SERVICE_ACCOUNT", "")
    namespace = os.environ.get("NASLOOP_EVALUATOR__KUBERNETES__NAMESPACE", "nasloop")
    secret = account.removesuffix("-sandbox") + "-operator-tls"
    got = subprocess.run(
        ["kubectl", "-n", namespace, "get", "secret", secret, "-o", "json"],
        capture_output=True,
        text=True,
    )
    if got.returncode != 0:
        return grpc.insecure_channel(address)
    data = {k: base64.b64decode(v) for k, v in json.loads(got.stdout)["data"].items()}
    credentials = grpc.ssl_channel_credentials(data["ca.crt"], data["tls.key"], data["tls.crt"])
    return grpc.secure_channel(address, credentials)  # its certificate names 127.0.0.1


def test_one_tiny_cycle_runs_in_the_cluster(controller: pb_grpc.ControllerStub) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    spec = pb.RunSpec(
        name=name,
        preset="local",
        cycles=1,
        candidates_per_cycle=4,
        base_model=os.environ.get("NASLOOP_E2E_MODEL", "models/tiny-e2e"),
        seed=1,
    )
    run = controller.StartRun(pb.StartRunRequest(spec=spec), timeout=60)
    assert run.name == name
    deadline = time.monotonic() + float(os.environ.get("NASLOOP_E2E_TIMEOUT_S", "1800"))
    while run.state not in ENDED:
        assert time.monotonic() < deadline, f"run {name} still {pb.RunState.Name(run.state)}"
        time.sleep(5)
        run = controller.GetRun(pb.GetRunRequest(name=name), timeout=30)
    assert run.state == pb.RUN_STATE_SUCCEEDED, (pb.RunState.Name(run.state), run.error)
    summary = controller.GetCycle(pb.GetCycleRequest(run=name, cycle=1), timeout=30)
    assert summary.cycle == 1 and summary.generated == 4
    assert summary.phase != pb.CYCLE_PHASE_FAILED and not summary.error, summary.error
