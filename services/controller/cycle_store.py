"""The object store as a cycle Job sees it: served by the controller, so no cycle pod holds the
store's keys (proto ``nasloop.v1.CycleStore``; the pod's side is ``nasloop.store.remote``).

Who may call: a Running pod of a cycle Job, recognised by its address (the gRPC peer) among the
pods the Kubernetes API lists for nasloop's cycle Jobs (:meth:`CycleJobs.cycle_of_pod_ip`). That
is the identity NetworkPolicies rest on too; it needs no token and no Secret in the pod. The
pod's run and cycle labels then decide what it may touch (:class:`CycleScope`): it reads its
run's records, its run's adapters and the seed corpora, and writes only its own cycle's records
and training pairs (never the run's spec or state, which are the controller's, nor another
cycle's records).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

from nasloop import layout
from nasloop.rpc import InvalidArgument, NotFound, PermissionDenied, Unavailable
from nasloop.store import base

T = TypeVar("T")
log = logging.getLogger("nasloop.controller")

# The largest object a cycle writes through the controller (its records are far smaller).
MAX_PUT_BYTES = 256 << 20
# How long an answer about a caller's address is trusted before the API is asked again.
IDENTITY_TTL_S = 5.0


@dataclass(frozen=True)
class CycleScope:
    """What the Job of cycle ``cycle`` of ``run`` (``layout.BASELINE``: its baseline) may read
    and write."""

    run: str
    cycle: int

    @property
    def writable(self) -> tuple[str, ...]:
        own = (f"{layout.records_prefix(self.run, self.cycle)}/",)
        if self.cycle == layout.BASELINE:
            return own  # the baseline selects and trains nothing
        return (*own, layout.pairs_key(self.run, self.cycle))

    @property
    def readable(self) -> tuple[str, ...]:
        return (
            f"{layout.run_prefix(self.run)}/",
            f"{layout.run_adapters_prefix(self.run)}/",
            f"{layout.CORPORA}/",
        )

    @property
    def who(self) -> str:
        which = "the baseline" if self.cycle == layout.BASELINE else f"cycle {self.cycle}"
        return f"{which} of run {self.run}"

    def check_read(self, key: str) -> str:
        return self._check(key, self.readable, "read")

    def check_write(self, key: str) -> str:
        return self._check(key, self.writable, "write")

    def check_list(self, prefix: str) -> str:
        """A listed prefix must lie inside one readable prefix (``runs/r1/cycles/`` does;
        ``runs/`` does not: it would name other runs)."""
        try:
            base.check_prefix(prefix)
        except base.InvalidKey as e:
            raise InvalidArgument(str(e)) from None
        if not any(prefix.startswith(p) for p in self.readable):
            raise PermissionDenied(
                f"{self.who} may not list {prefix!r} (it may list under {', '.join(self.readable)})"
            )
        return prefix

    def _check(self, key: str, allowed: tuple[str, ...], what: str) -> str:
        try:
            base.check_key(key)
        except base.InvalidKey as e:
            raise InvalidArgument(str(e)) from None
        if not any(key == p or (p.endswith("/") and key.startswith(p)) for p in allowed):
            raise PermissionDenied(
                f"{self.who} may not {what} {key!r} (it may {what} under {', '.join(allowed)})"
            )
        return key


def peer_ip(peer: str) -> str | None:
    """The address in a gRPC peer string (``ipv4:10.1.2.3:5000``, ``ipv6:[fd00::1]:5000``, the
    brackets possibly percent-encoded); ``None`` for a peer that has none (``unix:...``)."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None


class CallerIdentity:
    """Which cycle's pod has an address (its run and cycle), asked of ``lookup`` (the Kubernetes
    API) and remembered for ``ttl_s``: a cycle writes a record per candidate, the API need not
    hear of each."""

    def __init__(
        self, lookup: Callable[[str], tuple[str, int] | None], ttl_s: float | None = None
    ) -> None:
        self.lookup = lookup
        self.ttl_s = IDENTITY_TTL_S if ttl_s is None else ttl_s
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, tuple[str, int] | None]] = {}

    def cycle_of(self, peer: str) -> tuple[str, int]:
        ip = peer_ip(peer)
        if ip is None:
            raise PermissionDenied(f"the caller {peer} has no IP address: not a cycle pod")
        now = time.monotonic()
        with self._lock:
            hit = self._known.get(ip)
        if hit is not None and now - hit[0] < self.ttl_s:
            found = hit[1]
        else:
            try:
                found = self.lookup(ip)
            except Exception as e:  # the API failing is not the caller's fault
                raise Unavailable(f"cannot tell who {ip} is: {e}") from e
            with self._lock:
                self._known[ip] = (now, found)
        if found is None:
            raise PermissionDenied(
                f"the caller {ip} is not a running cycle pod: the cycle store serves only "
                "nasloop's cycle Jobs"
            )
        return found


class CycleStoreGate:
    """The store, each call checked against the caller's scope. Plain Python: the servicer
    converts messages, this decides."""

    def __init__(
        self,
        store: base.ObjectStore,
        identity: CallerIdentity,
        on_write: Callable[[str, int, str, bytes], None] | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        # Told of each write (run, cycle, key, data) once it is stored: the run manager turns
        # a cycle Job's progress into live events. Its failures never fail the write.
        self.on_write = on_write

    def scope(self, peer: str) -> CycleScope:
        return CycleScope(*self.identity.cycle_of(peer))

    def get(self, peer: str, key: str) -> tuple[bytes, str]:
        key = self.scope(peer).check_read(key)
        data = self._do(lambda: self.store.get_bytes(key))
        return data, base.sha256_hex(data)

    def put(self, peer: str, key: str, data: bytes) -> base.ObjectInfo:
        scope = self.scope(peer)
        key = scope.check_write(key)
        info = self._do(lambda: self.store.put_bytes(key, data))
        if self.on_write is not None:
            try:
                self.on_write(scope.run, scope.cycle, key, data)
            except Exception:
                log.exception("observing %s written by %s", key, scope.who)
        return info

    def exists(self, peer: str, key: str) -> bool:
        key = self.scope(peer).check_read(key)
        return self._do(lambda: self.store.exists(key))

    def list(self, peer: str, prefix: str) -> list[str]:
        prefix = self.scope(peer).check_list(prefix)
        return self._do(lambda: self.store.list(prefix))

    def delete(self, peer: str, key: str) -> None:
        key = self.scope(peer).check_write(key)
        self._do(lambda: self.store.delete(key))

    @staticmethod
    def _do(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except base.ObjectNotFound as e:
            raise NotFound(str(e)) from None
        except base.InvalidKey as e:
            raise InvalidArgument(str(e)) from None
        except base.StoreError as e:
            raise Unavailable(f"the object store failed: {e}") from None


def joined(pieces: Iterable[tuple[str, bytes]], limit: int = MAX_PUT_BYTES) -> tuple[str, bytes]:
    """A PutObject stream's key (from its first piece) and its bytes."""
    key, parts, size = None, [], 0
    for k, data in pieces:
        size += len(data)
        if size > limit:
            raise InvalidArgument(f"PutObject: the object is larger than {limit} bytes")
        if key is None:
            key = k
        elif k and k != key:
            raise InvalidArgument(f"one PutObject stream names two keys: {key!r} and {k!r}")
        parts.append(data)
    if not key:
        raise InvalidArgument("PutObject: the first chunk must carry the key")
    return key, b"".join(parts)
