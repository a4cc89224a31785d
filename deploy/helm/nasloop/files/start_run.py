"""Start the run described by the chart's `run.spec` (the chart's post-install hook runs this).

    python start_run.py SPEC_JSON CONTROLLER_ADDRESS [TIMEOUT_S]

Waits until the controller's health check says SERVING, then sends StartRun with the spec
(nasloop.v1.RunSpec in its JSON form). A run of that name that already exists is left alone,
so upgrades and retries of the hook are harmless. Exit status 0 on success or an existing run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nasloop.v1 import controller_pb2, controller_pb2_grpc


def wait_serving(channel: grpc.Channel, deadline: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    while True:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as e:
            status = e.code()
        if time.monotonic() > deadline:
            raise SystemExit(f"controller not serving in time (last: {status})")
        time.sleep(2)


def _channel(address: str) -> grpc.Channel:
    """Plaintext, or with NASLOOP_TLS_DIR (ca.crt, tls.crt, tls.key: the chart's operator
    certificate) mutual TLS."""
    tls_dir = os.environ.get("NASLOOP_TLS_DIR")
    if not tls_dir:
        return grpc.insecure_channel(address)
    d = Path(tls_dir)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.crt").read_bytes(),
        private_key=(d / "tls.key").read_bytes(),
        certificate_chain=(d / "tls.crt").read_bytes(),
    )
    return grpc.secure_channel(address, credentials)


def start_run(spec_path: Path, address: str, timeout_s: float = 600.0) -> int:
    spec = json_format.ParseDict(json.loads(spec_path.read_text()), controller_pb2.RunSpec())
    if not spec.name:
        raise SystemExit("run.spec.name is required")
    with _channel(address) as channel:
        wait_serving(channel, time.monotonic() + timeout_s)
        stub = controller_pb2_grpc.ControllerStub(channel)
        try:
            run = stub.StartRun(controller_pb2.StartRunRequest(spec=spec), timeout=60)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                print(f"run {spec.name} exists already; left alone")
                return 0
            raise SystemExit(f"StartRun failed: {e.code().name}: {e.details()}") from None
    print(f"run {run.name} started ({controller_pb2.RunState.Name(run.state)})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: start_run.py SPEC_JSON CONTROLLER_ADDRESS [TIMEOUT_S]")
    timeout = float(sys.argv[3]) if len(sys.argv) == 4 else 600.0
    sys.exit(start_run(Path(sys.argv[1]), sys.argv[2], timeout))
