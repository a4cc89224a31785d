"""Mutual TLS for nasloop's gRPC: credentials from :class:`~nasloop.config.TlsConfig`, and the
caller's identity taken from its verified client certificate.

An identity is the certificate's URI SAN ``nasloop://<domain>/<role>`` or, for one cycle Job,
``nasloop://<domain>/cycle/<run>/<cycle>`` (or the same as its subject's common name, which is
what Helm can write; a certificate naming two different identities is refused). Two CAs sign
them: the service CA (``ca_file``) signs every role but ``cycle``; the cycle CA
(``cycle_ca_file``) signs only cycle identities. The server's handshake accepts a certificate of
either CA; :class:`Authenticator` then checks that the CA which signed it may sign that role and
that the domain is this deployment's.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nasloop import layout
from nasloop.config import TlsConfig
from nasloop.rpc.errors import InvalidArgument, PermissionDenied

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


def _ca(cfg: TlsConfig) -> bytes:
    return cfg.ca_pem.encode() if cfg.ca_pem else _read(cfg.ca_file, "CA file")


def server_credentials(cfg: TlsConfig, client_auth: bool = True) -> grpc.ServerCredentials:
    """The server side: its own certificate; client certificates required and verified against
    the service CA and the cycle CA (``client_auth`` off: none asked for, the port where cycle
    pods without a certificate yet reach the CycleStore)."""
    pair = (_read(cfg.key_file, "key file"), _read(cfg.cert_file, "certificate file"))
    if not client_auth:
        return grpc.ssl_server_credentials([pair])
    roots = _ca(cfg)
    if cfg.cycle_ca_file:
        roots += b"\n" + _read(cfg.cycle_ca_file, "cycle CA file")
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=True)


def channel_credentials(cfg: TlsConfig, client_cert: bool = True) -> grpc.ChannelCredentials:
    """The client side: servers verified against the service CA; this process's certificate
    presented (``client_cert`` off: none, as a cycle pod before it has one)."""
    roots = _ca(cfg)
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=_read(cfg.key_file, "key file"),
        certificate_chain=_read(cfg.cert_file, "certificate file"),
    )


class CycleSigner:
    """The controller's side of a cycle pod's identity: the cycle CA signs the pod's own public
    key for the identity the controller knows the pod by. Nothing the CSR asks for but its key
    is used."""

    def __init__(self, cfg: TlsConfig, valid_s: float) -> None:
        if not cfg.cycle_ca_file or not cfg.cycle_ca_key_file:
            raise RuntimeError(
                "tls: signing cycle identities needs cycle_ca_file and cycle_ca_key_file"
            )
        self.domain = cfg.domain
        self.valid_s = valid_s
        self.ca = x509.load_pem_x509_certificate(_read(cfg.cycle_ca_file, "cycle CA file"))
        key = serialization.load_pem_private_key(
            _read(cfg.cycle_ca_key_file, "cycle CA key file"), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise RuntimeError("tls: the cycle CA key must be an EC or RSA key")
        self.key = key

    def sign(self, csr_pem: bytes, who: Identity) -> tuple[bytes, str]:
        """The certificate (PEM) for ``who`` over the CSR's key, and the identity URI."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise InvalidArgument(f"not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            raise InvalidArgument("the certificate request's signature does not verify")
        uri = who.uri(self.domain)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(who)[:64])]))
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(seconds=self.valid_s))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), uri


def enrol(cfg: TlsConfig, sign: Callable[[bytes], bytes]) -> None:
    """A cycle pod's start: make a key in ``cfg.key_file`` (never leaves the pod), have
    ``sign`` (the controller's SignCycleCertificate) certify it, write ``cfg.cert_file``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nasloop cycle")]))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = Path(cfg.key_file), Path(cfg.cert_file)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(sign(csr.public_bytes(serialization.Encoding.PEM)))


class Authenticator:
    """The identity of a verified peer certificate, remembered per certificate (parsing one
    costs far more than a novelty check)."""

    MAX_KNOWN = 4096

    def __init__(self, cfg: TlsConfig) -> None:
        self.domain = cfg.domain
        self._service_ca = x509.load_pem_x509_certificate(_ca(cfg))
        self._cycle_ca = (
            x509.load_pem_x509_certificate(_read(cfg.cycle_ca_file, "cycle CA file"))
            if cfg.cycle_ca_file
            else None
        )
        self._lock = threading.Lock()
        self._known: dict[bytes, Identity | PermissionDenied] = {}

    def identify(self, context: grpc.ServicerContext) -> Identity | None:
        """The caller's identity; ``None`` for a call without a client certificate (possible
        only on a port that asks for none)."""
        # grpc's stubs type each property as bytes; it is a list of bytes, one per value.
        auth = cast("Mapping[str, list[bytes]]", context.auth_context())
        certs = auth.get("x509_pem_cert") or []
        if not certs:
            return None
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
        ours = {u for u in uris if u.startswith(SCHEME)}
        # Helm's genSignedCert writes no URI SAN: the chart names the identity as the subject's
        # common name instead (the CA that signs decides which roles count, below).
        for cn in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            if isinstance(cn.value, str) and cn.value.startswith(SCHEME):
                ours.add(cn.value)
        if len(ours) != 1:
            raise PermissionDenied(
                f"a client certificate must name exactly one {SCHEME} identity, this one names "
                f"{len(ours)}"
            )
        (uri,) = ours
        identity = parse_identity(uri, self.domain)
        if identity.role == CYCLE:
            if not _issued_by(cert, self._cycle_ca):
                raise PermissionDenied(f"{uri!r} is not signed by the cycle identities' CA")
        elif not _issued_by(cert, self._service_ca):
            raise PermissionDenied(f"{uri!r} is not signed by the services' CA")
        return identity


def _issued_by(cert: x509.Certificate, ca: x509.Certificate | None) -> bool:
    if ca is None:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
