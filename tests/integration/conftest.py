"""Fixtures for the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from s3server import store_env
from servers import Server, novelty_server


@pytest.fixture
def s3_env(s3_endpoint: str) -> dict[str, str]:
    return {
        **store_env(s3_endpoint, f"s3://novelty-{uuid.uuid4().hex[:12]}/state"),
        "NASLOOP_SERVER__HOST": "127.0.0.1",
        "NASLOOP_SERVER__GRACE_S": "5",
    }


@pytest.fixture
def server(s3_env, tmp_path) -> Iterator[Server]:
    with novelty_server(s3_env, tmp_path / "server.log") as s:
        yield s
        assert s.stop() == 0, s.log.read_text()[-3000:]
