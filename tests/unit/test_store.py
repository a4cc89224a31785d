"""Object-store tests: every behaviour against both backends, plus S3- and config-specific ones."""

from __future__ import annotations

import io
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio.error import S3Error, ServerError
from s3auth import SignedS3
from s3server import free_port, running_s3_server

from nasloop.config import StoreConfig
from nasloop.store import (
    MANIFEST,
    IntegrityError,
    InvalidKey,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
    open_store,
    sha256_hex,
)
from nasloop.store.s3 import is_transient

CREDS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


# -- both backends ------------------------------------------------------------------------------
def test_round_trip_and_overwrite(store: ObjectStore) -> None:
    info = store.put_bytes("runs/r1/spec.yaml", b"a: 1\n")
    assert (info.key, info.size, info.sha256) == ("runs/r1/spec.yaml", 5, sha256_hex(b"a: 1\n"))
    assert store.get_bytes("runs/r1/spec.yaml") == b"a: 1\n"
    assert store.exists("runs/r1/spec.yaml")
    store.put_bytes("runs/r1/spec.yaml", b"")
    assert store.get_bytes("runs/r1/spec.yaml") == b""
    store.put_json("x.json", {"b": [1, 2]})
    assert store.get_json("x.json") == {"b": [1, 2]}


def test_list_with_prefixes(store: ObjectStore) -> None:
    keys = ["runs/r1/a", "runs/r1/cycles/0/s.json", "runs/r10/a", "runs/r2/a", "top"]
    for k in reversed(keys):
        store.put_bytes(k, k.encode())
    assert store.list() == keys
    assert store.list("runs/r1/") == ["runs/r1/a", "runs/r1/cycles/0/s.json"]
    assert store.list("runs/r1") == ["runs/r1/a", "runs/r1/cycles/0/s.json", "runs/r10/a"]
    assert store.list("runs/r") == keys[:4]
    assert store.list("t") == ["top"]
    assert store.list("nothing/") == []
    with pytest.raises(InvalidKey):
        store.list("../")


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"1")
    store.put_bytes("a/c", b"2")
    store.delete("a/b")
    store.delete("a/b")  # missing is fine
    store.delete("never/was")
    assert not store.exists("a/b")
    assert store.list() == ["a/c"]
    assert store.delete_prefix("a/") == 1
    assert store.list() == []


def test_missing_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as err:
        store.get_bytes("no/such/key")
    assert isinstance(err.value, KeyError)
    assert "no/such/key" in str(err.value)
    assert not store.exists("no/such/key")
    store.put_bytes("no/such/key/below", b"x")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no/such/key")  # a "directory" is not an object


@pytest.mark.parametrize("key", ["../x", "a/../b", "/abs", "a//b", "", "a/", "./a", "a\\b", "a\nb"])
def test_invalid_keys_rejected(store: ObjectStore, key: str) -> None:
    for op in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key)):
        with pytest.raises(InvalidKey):
            op()
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)


def test_put_file_get_file(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    store.put_file("models/m/weights.bin", src)
    dst = store.get_file("models/m/weights.bin", tmp_path / "out" / "w.bin")
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["w.bin"]  # no temp file left


def test_artifact_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_bytes(b'{"r": 8}')
    files: dict[str, bytes | Path] = {
        "adapter_model.safetensors": b"\x00" * 1000,
        "adapter_config.json": tmp_path / "cfg.json",
    }
    manifest = store.put_artifact("adapters/r1/3", files, meta={"cycle": 3})
    assert store.get_manifest("adapters/r1/3") == manifest
    assert manifest["meta"] == {"cycle": 3}
    assert manifest["files"]["adapter_config.json"] == {
        "sha256": sha256_hex(b'{"r": 8}'),
        "size": 8,
    }
    assert store.get_artifact_file("adapters/r1/3", "adapter_config.json") == b'{"r": 8}'
    assert store.list("adapters/r1/3/")[-1] == f"adapters/r1/3/{MANIFEST}"
    manifest_bytes = store.get_bytes(f"adapters/r1/3/{MANIFEST}")
    assert store.manifest_sha256("adapters/r1/3") == sha256_hex(manifest_bytes)
    assert store.manifest_sha256("adapters/r1/9") is None
    with pytest.raises(ObjectNotFound):
        store.get_artifact_file("adapters/r1/3", "other.bin")
    with pytest.raises(InvalidKey):
        store.put_artifact("adapters/r1/4", {MANIFEST: b"{}"})


def test_artifact_invisible_until_manifest_written(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = store.put_bytes
    written: list[str] = []

    def put_failing_on_manifest(key: str, data: bytes) -> Any:
        if key.endswith(MANIFEST):
            raise StoreError("simulated crash before the manifest")
        written.append(key)
        return real_put(key, data)

    monkeypatch.setattr(store, "put_bytes", put_failing_on_manifest)
    with pytest.raises(StoreError, match="simulated"):
        store.put_artifact("adapters/r1/0", {"a.bin": b"a", "b.bin": b"b"})
    assert written == ["adapters/r1/0/a.bin", "adapters/r1/0/b.bin"]  # files went first
    assert store.list("adapters/r1/0/") == written
    assert store.get_manifest("adapters/r1/0") is None
    with pytest.raises(ObjectNotFound):
        store.get_artifact_file("adapters/r1/0", "a.bin")


def test_tampered_artifact_file_fails_integrity(store: ObjectStore) -> None:
    store.put_artifact("novelty/ns", {"snapshot": b"good bytes"})
    store.put_bytes("novelty/ns/snapshot", b"evil bytes")  # same size, other content
    with pytest.raises(IntegrityError):
        store.get_artifact_file("novelty/ns", "snapshot")
    store.put_bytes("novelty/ns/snapshot", b"short")
    with pytest.raises(IntegrityError):
        store.get_artifact_file("novelty/ns", "snapshot")


def test_concurrent_writers(store: ObjectStore) -> None:
    if isinstance(store, S3Store):
        # moto answers some of eight simultaneous writes of one key with HTTP 500 on a loaded
        # machine: the transient error the store retries, given the retries a real one has.
        store.retries, store.backoff_s = 8, 0.05
    n_threads, per_thread = 8, 10
    payloads = {t: bytes([t]) * 50_000 for t in range(n_threads)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.put_bytes(f"w/{t}/{i}", payloads[t])
                store.put_bytes("shared/key", payloads[t])  # everyone writes the same key too
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    expected = sorted([f"w/{t}/{i}" for t in range(n_threads) for i in range(per_thread)])
    assert store.list("w/") == expected
    assert store.list() == sorted([*expected, "shared/key"])
    assert store.get_bytes("shared/key") in payloads.values()  # one whole write won
    assert all(store.get_bytes(f"w/{t}/9") == payloads[t] for t in range(n_threads))


# -- local only ---------------------------------------------------------------------------------
def test_local_layout_and_no_temp_files_listed(local_store: LocalStore) -> None:
    local_store.put_bytes("a/b.txt", b"x")
    assert (local_store.root / "a" / "b.txt").read_bytes() == b"x"
    assert local_store.url == f"file://{local_store.root}"
    (local_store.root / "a" / ".0123.nasloop-tmp").write_bytes(b"half")  # a crashed write
    assert local_store.list() == ["a/b.txt"]
    with pytest.raises(InvalidKey):
        local_store.put_bytes("a/x.nasloop-tmp", b"x")


def test_local_tampered_on_disk(local_store: LocalStore) -> None:
    local_store.put_artifact("art", {"f": b"content"})
    (local_store.root / "art" / "f").write_bytes(b"CONTENT")
    with pytest.raises(IntegrityError):
        local_store.get_artifact_file("art", "f")


# -- S3 only ------------------------------------------------------------------------------------
def test_s3_bucket_created_on_first_use(s3_store: S3Store) -> None:
    assert not s3_store.client.bucket_exists(s3_store.bucket)
    assert s3_store.list() == []
    assert s3_store.client.bucket_exists(s3_store.bucket)


def test_s3_missing_bucket_without_create(s3_endpoint: str) -> None:
    store = S3Store(s3_endpoint, "absent-bucket", create_bucket=False, backoff_s=1, **CREDS)
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"'absent-bucket' does not exist"):
        store.put_bytes("k", b"x")
    assert time.monotonic() - start < 1  # not retried


def test_s3_prefix_and_metadata(s3_endpoint: str) -> None:
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    store = S3Store(s3_endpoint, bucket, "/env/prod/", **CREDS)
    assert store.url == f"s3://{bucket}/env/prod"
    store.put_bytes("runs/r1/a", b"hello")
    assert store.list() == ["runs/r1/a"]
    assert store.list("runs/r1/") == ["runs/r1/a"]
    stat = store.client.stat_object(bucket, "env/prod/runs/r1/a")
    assert stat.metadata["x-amz-meta-sha256"] == sha256_hex(b"hello")
    # Another store on the bucket root sees the full names; one on another prefix sees nothing.
    assert S3Store(s3_endpoint, bucket, **CREDS).list() == ["env/prod/runs/r1/a"]
    assert S3Store(s3_endpoint, bucket, "env/dev", **CREDS).list() == []


def test_s3_corrupted_object_detected(s3_store: S3Store) -> None:
    s3_store.put_bytes("k", b"good")
    s3_store.client.put_object(
        s3_store.bucket, "k", io.BytesIO(b"bad!"), 4, metadata={"sha256": sha256_hex(b"good")}
    )
    with pytest.raises(IntegrityError):
        s3_store.get_bytes("k")


def test_s3_retries_until_server_comes_up() -> None:
    port = free_port()
    store = S3Store(f"127.0.0.1:{port}", "late-bucket", retries=8, backoff_s=0.1, **CREDS)
    ready = threading.Event()
    stop = threading.Event()

    def serve_later() -> None:
        time.sleep(0.3)
        with running_s3_server(port):
            ready.set()
            stop.wait(30)

    server = threading.Thread(target=serve_later)
    server.start()
    try:
        assert not ready.is_set()
        store.put_bytes("k", b"made it")  # connection refused at first, then retried
        assert ready.is_set()
        assert store.get_bytes("k") == b"made it"
    finally:
        stop.set()
        server.join()


def test_s3_connection_refused_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    store = S3Store(f"127.0.0.1:{free_port()}", "b-b-b", retries=2, backoff_s=0.01, **CREDS)
    with pytest.raises(StoreError, match="after 3 attempts"):
        store.get_bytes("k")
    assert len([r for r in caplog.records if "transient" in r.getMessage()]) == 2


def _s3_error(code: str, status: int = 503) -> S3Error:
    class _Resp:
        pass

    resp = _Resp()
    resp.status = status  # type: ignore[attr-defined]
    return S3Error(resp, code, "injected", "/b/k", "req", "host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        _s3_error("SlowDown"),
        _s3_error("InternalError", 500),
        ServerError("server failed with HTTP status code 502", 502),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ConnectionResetError(),
    ],
)
def test_s3_transient_errors_are_retried(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    s3_store.put_bytes("k", b"v")  # creates the bucket
    real_get = s3_store.client.get_object
    calls = 0

    def flaky_get(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise exc
        return real_get(*args, **kwargs)  # the real endpoint serves the final call

    assert is_transient(exc)
    monkeypatch.setattr(s3_store.client, "get_object", flaky_get)
    assert s3_store.get_bytes("k") == b"v"
    assert calls == 3


def test_s3_non_transient_error_not_retried(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def denied(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise _s3_error("AccessDenied", 403)

    s3_store.list()
    monkeypatch.setattr(s3_store.client, "put_object", denied)
    with pytest.raises(StoreError, match=r"put 'a/k' failed: S3 error AccessDenied") as err:
        s3_store.put_bytes("a/k", b"v")
    assert not isinstance(err.value, ObjectNotFound)
    assert calls == 1
    assert not is_transient(ServerError("not modified", 304))


def test_s3_presigned_urls(s3_signed_store: S3Store) -> None:
    s3_store = s3_signed_store
    put_url = s3_store.presigned_put_url("jobs/j1/result.json", expires_s=60)
    # An explicit Content-Type: urllib's default (form-urlencoded) makes moto's werkzeug app
    # swallow the body as form data and store an empty object.
    headers = {"Content-Type": "application/octet-stream"}
    req = urllib.request.Request(put_url, data=b'{"ok": true}', method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert s3_store.get_bytes("jobs/j1/result.json") == b'{"ok": true}'

    s3_store.put_bytes("models/m/w.bin", b"weights")
    with urllib.request.urlopen(s3_store.presigned_get_url("models/m/w.bin", 60), timeout=10) as r:
        assert r.read() == b"weights"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(s3_store.presigned_get_url("models/none", 60), timeout=10)
    assert err.value.code == 404


def test_s3_presigned_urls_are_checked(s3_signed_store: S3Store, signed_s3: SignedS3) -> None:
    """A presigned URL works only as signed: another signature, key, host, method or an expired
    one is refused (the S3 server checks signatures: tests/s3auth.py)."""
    store = s3_signed_store
    store.put_bytes("models/m/w.bin", b"weights")
    store.put_bytes("models/m/other.bin", b"other")
    url = store.presigned_get_url("models/m/w.bin", 60)
    port = signed_s3.endpoint.rsplit(":", 1)[1]
    wrong_key = S3Store(
        signed_s3.endpoint, store.bucket, access_key=signed_s3.access_key, secret_key="not-it",
        region=signed_s3.region, create_bucket=False,
    )  # fmt: skip
    sig = url.rsplit("X-Amz-Signature=", 1)[1]
    tampered = {
        "signature": url.replace(sig, sig[::-1]),
        "secret key": wrong_key.presigned_get_url("models/m/w.bin", 60),
        "object": url.replace("w.bin", "other.bin"),
        "host": url.replace(f"127.0.0.1:{port}", f"localhost:{port}"),
        "expiry": url.replace("X-Amz-Expires=60", "X-Amz-Expires=3600"),
    }
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"weights"
    for what, bad in tampered.items():
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 403, what
    put = urllib.request.Request(url, data=b"x", method="PUT")  # a GET URL used to write
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(put, timeout=10)
    assert err.value.code == 403
    short = store.presigned_get_url("models/m/w.bin", 1)
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(short, timeout=10)
    assert err.value.code == 403 and b"expired" in err.value.read()
    assert store.get_bytes("models/m/w.bin") == b"weights"


# -- open_store ---------------------------------------------------------------------------------
def test_open_store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(StoreConfig(url=f"file://{tmp_path}/abs"))
    assert isinstance(store, LocalStore) and store.root == tmp_path / "abs"
    monkeypatch.chdir(tmp_path)
    store = open_store(StoreConfig(url="file://rel/dir"))
    assert isinstance(store, LocalStore) and store.root == tmp_path / "rel" / "dir"
    assert store.url == f"file://{tmp_path}/rel/dir"


def test_open_store_s3(s3_endpoint: str) -> None:
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    cfg = StoreConfig.model_validate(
        {
            "url": f"s3://{bucket}/pre",
            "endpoint": f"http://{s3_endpoint}",
            "access_key": "testing",
            "secret_key": "testing",
            "region": "us-east-1",
            "retries": 1,
        }
    )
    store = open_store(cfg)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (bucket, "pre", f"s3://{bucket}/pre")
    store.put_bytes("k", b"v")
    assert store.client.get_object(bucket, "pre/k").read() == b"v"


def test_open_store_bad_config() -> None:
    with pytest.raises(StoreError, match="endpoint"):
        open_store(StoreConfig(url="s3://bucket"))
    with pytest.raises(StoreError, match="unsupported"):
        open_store(StoreConfig.model_construct(url="ftp://host/x"))
    with pytest.raises(StoreError, match="bucket name"):
        open_store(StoreConfig(url="s3://Bad_Bucket", endpoint="127.0.0.1:1"))
    with pytest.raises(InvalidKey):
        S3Store("127.0.0.1:1", "bucket", "a/../b")


def test_local_append(local_store: LocalStore) -> None:
    assert local_store.supports_append
    local_store.append_bytes("j/seg.log", b"one\n")
    local_store.append_bytes("j/seg.log", b"two\n")
    assert local_store.get_bytes("j/seg.log") == b"one\ntwo\n"
    assert local_store.list("j/") == ["j/seg.log"]
    with pytest.raises(InvalidKey):
        local_store.append_bytes("../escape", b"x")


def test_s3_cannot_append(s3_store: S3Store) -> None:
    assert not s3_store.supports_append
    with pytest.raises(NotImplementedError):
        s3_store.append_bytes("j/seg.log", b"x")
