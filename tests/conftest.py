"""Shared pytest fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3auth import SignedS3, running_signed_s3
from s3server import running_s3_server
from servers import Server, service_server

from nasloop.store import LocalStore, S3Store

S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's in-process runs, as in the sandbox (and no OpenMP
    contention on a busy machine); use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def signed_s3() -> Iterator[SignedS3]:
    """An S3 server that checks every signature, presigned URLs included (tests/s3auth.py)."""
    with running_signed_s3() as s3:
        yield s3


@pytest.fixture
def s3_signed_store(signed_s3: SignedS3) -> S3Store:
    """An :class:`S3Store` on a fresh bucket of the signature-checking S3 server."""
    return S3Store(
        signed_s3.endpoint,
        f"test-{uuid.uuid4().hex[:16]}",
        access_key=signed_s3.access_key,
        secret_key=signed_s3.secret_key,
        region=signed_s3.region,
        retries=2,
        backoff_s=0.05,
    )


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def evaluator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One evaluator service (strict sandbox, 2 workers) shared by the evaluator tests.

    A canary environment variable is set in its environment: no candidate may ever see it.
    """
    from adversarial.cases import CANARY_ENV, CANARY_VALUE

    root = tmp_path_factory.mktemp("evaluator")
    env = {
        "NASLOOP_STORE__URL": f"file://{root / 'store'}",
        "NASLOOP_EVALUATOR__DATA_DIR": str(root / "data"),
        "NASLOOP_EVALUATOR__WORKERS": "2",
        "NASLOOP_EVALUATOR__SANDBOX": "strict",
        "NASLOOP_EVALUATOR__MEMORY_BYTES": str(1 << 30),
        "NASLOOP_EVALUATOR__TIME_LIMIT_S": "120",
        "NASLOOP_EVALUATOR__MAX_CALLS": "3",
        "NASLOOP_EVALUATOR__MAX_CANDIDATES": "128",
        CANARY_ENV: CANARY_VALUE,
    }
    with service_server("evaluator", env, root / "server.log", timeout_s=180) as server:
        yield server
