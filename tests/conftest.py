"""Shared pytest fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import running_s3_server

from nasloop.store import LocalStore, S3Store

S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a moto S3 server that lives for the whole test session."""
    with running_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3Store:
    """An :class:`S3Store` on a fresh, not yet created bucket of the session's S3 server."""
    return S3Store(
        s3_endpoint, f"test-{uuid.uuid4().hex[:16]}", retries=2, backoff_s=0.05, **S3_CREDENTIALS
    )


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")
