"""The README's grpcurl commands work against the running novelty service, through server
reflection only (no proto files given to grpcurl)."""

from __future__ import annotations

import json
import subprocess

import pytest
from servers import GRPCURL, Server, grpcurl

pytestmark = pytest.mark.skipif(
    GRPCURL is None, reason="grpcurl not installed (the dev extra ships it on linux x86_64)"
)


def test_readme_grpcurl_commands(server: Server) -> None:
    services = grpcurl(server, "list").split()
    assert "nasloop.v1.Novelty" in services and "grpc.health.v1.Health" in services
    assert "CheckAndAdd" in grpcurl(server, "describe", "nasloop.v1.Novelty")
    health = json.loads(grpcurl(server, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"

    created = json.loads(
        grpcurl(server, "nasloop.v1.Novelty/CreateNamespace", data={"name": "corpus"})
    )
    assert created["params"]["num_perm"] == 128
    raw = json.loads(
        grpcurl(
            server,
            "nasloop.v1.Novelty/CreateNamespace",
            data={"name": "run-1", "params": {"mode": "TOKEN_MODE_RAW"}},
        )
    )
    assert raw["params"]["mode"] == "TOKEN_MODE_RAW"

    code = (
        "import torch.nn as nn\nclass Net(nn.Module):\n    def forward(self, x):\n"
        "        return self.fc(self.conv(x))\n"
    )
    added = json.loads(
        grpcurl(
            server,
            "nasloop.v1.Novelty/CheckAndAdd",
            data={"namespace": "corpus", "id": "net-1", "code": code},
        )
    )
    assert added["novel"] and added["added"]
    again = json.loads(
        grpcurl(
            server,
            "nasloop.v1.Novelty/Check",
            data={"code": code.replace("fc", "head") + "# copy\n", "namespaces": ["corpus"]},
        )
    )
    assert again.get("novel", False) is False and again["nearest_id"] == "net-1"
    stats = json.loads(grpcurl(server, "nasloop.v1.Novelty/Stats"))
    assert stats["total_entries"] == "1"


def test_grpcurl_sees_the_error_status(server: Server) -> None:
    out = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-d",
            json.dumps({"name": "nope"}),
            server.address,
            "nasloop.v1.Novelty/GetNamespace",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "NotFound" in out.stderr and "unknown namespace 'nope'" in out.stderr


def test_readme_evaluator_grpcurl_commands(evaluator_server: Server) -> None:
    (digits,) = json.loads(grpcurl(evaluator_server, "nasloop.v1.Evaluator/ListDatasets"))[
        "datasets"
    ]
    assert digits["name"] == "digits" and digits["out_shape"] == ["10"]
    reply = json.loads(
        grpcurl(
            evaluator_server,
            "nasloop.v1.Evaluator/Validate",
            data={"candidates": [{"id": "c1", "code": "import os"}]},
        )
    )
    (result,) = reply["results"]
    assert result["result"]["status"] == "STATUS_FORBIDDEN_CONSTRUCT"
    from candidates import GOOD_NET

    streamed = grpcurl(
        evaluator_server,
        "nasloop.v1.Evaluator/Evaluate",
        data={"candidates": [{"id": "c1", "code": GOOD_NET}], "protocol": {"name": "quick"}},
    )
    assert json.loads(streamed)["result"]["last_stage"] == "STAGE_EVALUATED"
