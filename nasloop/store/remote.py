"""The store of a cycle Job in cluster mode: ``controller://host:port``, every call made to the
controller's ``CycleStore`` service (services/controller/cycle_store.py), which holds the real
store's keys. The pod itself holds none.

The controller answers only a running cycle pod, and only within its run; a refusal surfaces as
:class:`PermissionDenied`. Calls are retried while the controller is unreachable (it may be
restarting) for up to ``outage_s``; every write is idempotent, so a retry is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

import nasloop.store.base as base
from nasloop.config import TlsConfig
from nasloop.rpc.client import connect
from nasloop.v1 import controller_pb2 as pb
from nasloop.v1 import controller_pb2_grpc as pb_grpc

T = TypeVar("T")

SCHEME = "controller://"
CHUNK_BYTES = 1 << 20
OUTAGE_S = 120.0
CALL_TIMEOUT_S = 120.0
_RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class PermissionDenied(base.StoreError):
    """The controller refused: the caller is not a running cycle pod, or the key is not its."""


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``data`` in pieces of at most ``size`` bytes; one empty piece for no data."""
    if not data:
        yield b""
    for i in range(0, len(data), size):
        yield data[i : i + size]


class RemoteStore(base.ObjectStore):
    def __init__(
        self,
        address: str,
        outage_s: float = OUTAGE_S,
        backoff_s: float = 0.2,
        tls: TlsConfig | None = None,
    ) -> None:
        if not address:
            raise base.StoreError(f"a controller store url needs an address: {SCHEME}<host>:<port>")
        self.url = f"{SCHEME}{address}"
        self.address = address
        self.outage_s = outage_s
        self.backoff_s = backoff_s
        # With TLS on, the controller's certificate is checked; the pod presents none (it
        # has none until the controller signs one: sign_cycle_certificate).
        self._channel = connect(address, timeout_s=CALL_TIMEOUT_S, tls=tls, client_cert=False)
        self._stub = pb_grpc.CycleStoreStub(self._channel)

    def __repr__(self) -> str:
        return f"RemoteStore({self.address!r})"

    def close(self) -> None:
        self._channel.close()

    def put_bytes(self, key: str, data: bytes) -> base.ObjectInfo:
        base.check_key(key)

        def stream() -> Iterator[pb.ObjectChunk]:
            for i, piece in enumerate(chunks(data)):
                yield pb.ObjectChunk(key=key if i == 0 else "", data=piece)

        stat = self._call("put", key, lambda: self._stub.PutObject(stream()))
        info = base.ObjectInfo(key, len(data), base.sha256_hex(data))
        if stat.sha256 != info.sha256 or stat.size != info.size:
            raise base.IntegrityError(
                f"the controller stored {stat.size} bytes ({stat.sha256[:12]}) at {key}, "
                f"not the {info.size} sent ({info.sha256[:12]})"
            )
        return info

    def get_bytes(self, key: str) -> bytes:
        base.check_key(key)

        def read() -> tuple[bytes, str]:
            parts, sha = [], ""
            answer = self._stub.GetObject(pb.ObjectKey(key=key), timeout=CALL_TIMEOUT_S)
            for i, chunk in enumerate(answer):
                if i == 0:
                    sha = chunk.sha256
                parts.append(chunk.data)
            return b"".join(parts), sha

        data, sha = self._call("get", key, read)
        if base.sha256_hex(data) != sha:
            raise base.IntegrityError(
                f"{key} arrived from the controller damaged (SHA-256 mismatch)"
            )
        return data

    def exists(self, key: str) -> bool:
        base.check_key(key)
        request = pb.ObjectKey(key=key)
        return self._call("stat", key, lambda: self._stub.StatObject(request)).exists

    def list(self, prefix: str = "") -> list[str]:
        base.check_prefix(prefix)
        request = pb.ListObjectsRequest(prefix=prefix)
        return list(self._call("list", prefix, lambda: self._stub.ListObjects(request)).keys)

    def delete(self, key: str) -> None:
        base.check_key(key)
        self._call("delete", key, lambda: self._stub.DeleteObject(pb.ObjectKey(key=key)))

    def sign_cycle_certificate(self, csr_pem: bytes) -> bytes:
        """The controller's signature over this pod's key: its identity (PEM certificate)."""
        request = pb.CycleCertificateRequest(csr_pem=csr_pem)
        answer = self._call(
            "sign", "a cycle identity", lambda: self._stub.SignCycleCertificate(request)
        )
        return answer.certificate_pem

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        give_up = time.monotonic() + self.outage_s
        pause = self.backoff_s
        while True:
            try:
                return fn()
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code in _RETRY and time.monotonic() + pause < give_up:
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                what = f"{op} {key!r} through the controller at {self.address}"
                if code == grpc.StatusCode.NOT_FOUND:
                    raise base.ObjectNotFound(details or key) from None
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise PermissionDenied(f"{what}: refused: {details}") from None
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise base.InvalidKey(f"{what}: {details}") from None
                raise base.StoreError(f"{what}: {code.name}: {details}") from None
