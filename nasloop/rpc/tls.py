"""Mutual TLS for nasloop's gRPC: credentials from :class:`~nasloop.config.TlsConfig`, and the
caller's identity taken from its verified client certificate.

An identity is the certificate's URI SAN ``nasloop://<domain>/<role>`` or, for one cycle Job,
``nasloop://<domain>/cycle/<run>/<cycle>``. Two CAs sign them: the service CA (``ca_file``)
signs every role but ``cycle``; the cycle CA (``cycle_ca_file``) signs only cycle identities.
The server's handshake accepts a certificate of either CA; :class:`Authenticator` then checks
that the CA which signed it may sign that role and that the domain is this deployment's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from nasloop import layout
from nasloop.config import TlsConfig
from nasloop.rpc.errors import PermissionDenied

SCHEME = "nasloop://"
CYCLE = "cycle"
# Roles the service CA signs (every process of a release but the cycle Jobs).
SERVICE_ROLES = frozenset(
    {"controller", "evaluator", "operator", "generator", "novelty", "trainer"}
)


@dataclass(frozen=True)
class Identity:
    """Who called: a role, and for a cycle Job its run and cycle (``layout.BASELINE``: the
    run's baseline Job)."""

    role: str
    run: str = ""
    cycle: int = -1

    def __str__(self) -> str:
        if self.role == CYCLE:
            which = "the baseline" if self.cycle == layout.BASELINE else f"cycle {self.cycle}"
            return f"{which} of run {self.run}"
        return self.role

    def uri(self, domain: str) -> str:
        path = f"{CYCLE}/{self.run}/{self.cycle}" if self.role == CYCLE else self.role
        return f"{SCHEME}{domain}/{path}"


def parse_identity(uri: str, domain: str) -> Identity:
    """The identity a SAN URI names; :class:`PermissionDenied` for any other URI."""
    if not uri.startswith(SCHEME):
        raise PermissionDenied(f"{uri!r} is not a nasloop identity")
    authority, _, path = uri[len(SCHEME) :].partition("/")
    if authority != domain:
        raise PermissionDenied(f"{uri!r} belongs to {authority!r}, not to {domain!r}")
    parts = path.split("/")
    if len(parts) == 1 and parts[0] in SERVICE_ROLES:
        return Identity(parts[0])
    if len(parts) == 3 and parts[0] == CYCLE and parts[2].isdigit():
        n = int(parts[2])
        try:
            layout.check_run_name(parts[1])
            if n != layout.BASELINE:
                layout.check_cycle(n)
        except ValueError:
            pass
        else:
            return Identity(CYCLE, parts[1], n)
    raise PermissionDenied(f"{uri!r} names no nasloop role")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise RuntimeError(f"tls: cannot read the {what} {path}: {e.strerror}") from None


def server_credentials(cfg: TlsConfig) -> grpc.ServerCredentials:
    """The server side: its own certificate; client certificates required and verified against
    the service CA and the cycle CA."""
    roots = _read(cfg.ca_file, "CA file")
    if cfg.cycle_ca_file:
        roots += b"\n" + _read(cfg.cycle_ca_file, "cycle CA file")
    pair = (_read(cfg.key_file, "key file"), _read(cfg.cert_file, "certificate file"))
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=True)


def channel_credentials(cfg: TlsConfig) -> grpc.ChannelCredentials:
    """The client side: servers verified against the service CA; this process's certificate
    presented."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(cfg.ca_file, "CA file"),
        private_key=_read(cfg.key_file, "key file"),
        certificate_chain=_read(cfg.cert_file, "certificate file"),
    )


class Authenticator:
    """The identity of a verified peer certificate, remembered per certificate (parsing one
    costs far more than a novelty check)."""

    MAX_KNOWN = 4096

    def __init__(self, cfg: TlsConfig) -> None:
        self.domain = cfg.domain
        self._service_ca = x509.load_pem_x509_certificate(_read(cfg.ca_file, "CA file"))
        self._cycle_ca = (
            x509.load_pem_x509_certificate(_read(cfg.cycle_ca_file, "cycle CA file"))
            if cfg.cycle_ca_file
            else None
        )
        self._lock = threading.Lock()
        self._known: dict[bytes, Identity | PermissionDenied] = {}

    def identify(self, context: grpc.ServicerContext) -> Identity:
        certs = context.auth_context().get("x509_pem_cert") or []
        if not certs:
            raise PermissionDenied("the call carries no client certificate")
        pem = certs[0]
        with self._lock:
            known = self._known.get(pem)
        if known is None:
            try:
                known = self.identity_of(pem)
            except PermissionDenied as e:
                known = e
            with self._lock:
                if len(self._known) >= self.MAX_KNOWN:
                    self._known.clear()
                self._known[pem] = known
        if isinstance(known, PermissionDenied):
            raise known
        return known

    def identity_of(self, pem: bytes) -> Identity:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        ours = [u for u in uris if u.startswith(SCHEME)]
        if len(ours) != 1:
            raise PermissionDenied(
                f"a client certificate must name exactly one {SCHEME} identity, this one names "
                f"{len(ours)}"
            )
        identity = parse_identity(ours[0], self.domain)
        if identity.role == CYCLE:
            if not _issued_by(cert, self._cycle_ca):
                raise PermissionDenied(f"{ours[0]!r} is not signed by the cycle identities' CA")
        elif not _issued_by(cert, self._service_ca):
            raise PermissionDenied(f"{ours[0]!r} is not signed by the services' CA")
        return identity


def _issued_by(cert: x509.Certificate, ca: x509.Certificate | None) -> bool:
    if ca is None:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
