"""The relay-to-node hop of the relay's public ``/v1``, in TLS between the relay and the node.

An app with an API key (no node of its own) calls the relay's ``/v1``; TLS from
the app ends at the relay, which reads the model to route. The relay then opens
a stream to the serving node inside that node's tunnel and speaks TLS 1.3 with
the node over the stream's bytes (as two nodes do, ``quorum.tunnel.e2e``):

- **the relay** presents a certificate for a key it makes at start and keeps in
  memory only (:class:`RelayIdentity`); it sends that certificate to every node
  in its answer to the node's join (``RELAY_CERT_HEADER``, on the tunnel's own
  TLS). The node trusts exactly that certificate for these streams
  (:func:`hop_server_context`): nothing but that relay process can open one.
- **the node** presents its node certificate; the relay does not hold the
  cluster CA (it keeps only its public key), so it checks the key instead: the
  certificate's key must be the one this node id is bound to at the relay, the
  key that proved itself at the join (:func:`peer_fingerprint`).

What that protects: whatever lies between the relay process and the node and
can see inside the tunnel's TLS (a reverse proxy or CDN that ends TLS in front
of the relay, a relay-to-relay link, a tunnel on plain ``ws://``) sees only
ciphertext; the relay operator, who runs the process that routes, still can
read these requests (``docs/security.md``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quorum.secure.identity import Identity, fingerprint_of
from quorum.secure.tls import ClusterTLS

HOP_PATH = "/quorum/v1/relay-hop"
"""The path of a stream the relay opens to a node for the hop: TLS inside, then requests."""
HOP_CAPABILITY = "relay-hop"
"""What a node says in its hello when it serves :data:`HOP_PATH`."""
RELAY_CERT_HEADER = "X-Quorum-Relay-Cert"
"""The relay's certificate (base64 DER), in its answer to a node's tunnel upgrade."""
_DAYS = 3650


@dataclass(frozen=True, slots=True)
class RelayIdentity:
    """The relay's key for the hop (made at start, kept in memory) and its certificate."""

    identity: Identity
    cert: x509.Certificate
    client: ssl.SSLContext

    @classmethod
    def generate(cls) -> RelayIdentity:
        identity = Identity.from_key(ec.generate_private_key(ec.SECP256R1()))
        cert = relay_certificate(identity)
        return cls(identity, cert, _client_context(identity, cert))

    @property
    def header_value(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()


def relay_certificate(identity: Identity) -> x509.Certificate:
    """A self-signed certificate for the relay's key: what nodes trust for the hop."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quorum relay " + identity.short)])
    public = identity.key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(identity.key, hashes.SHA256())
    )


def _client_context(identity: Identity, cert: x509.Certificate) -> ssl.SSLContext:
    """The relay's side: TLS 1.3 with its certificate. The node's certificate is checked
    after the handshake against the key bound to its node id (:func:`peer_fingerprint`),
    not against a CA: the relay holds none it could sign or verify a chain with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the peer's key is pinned instead, before any data
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # ``load_cert_chain`` reads files only: the key is on disk for this call alone, in a
    # directory only this user can enter, and removed before it returns.
    with tempfile.TemporaryDirectory(prefix="quorum-relay-hop-") as where:
        key_path, cert_path = Path(where) / "key.pem", Path(where) / "cert.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        context.load_cert_chain(cert_path, key_path)
    return context


def relay_cert_of(header: str | None) -> bytes | None:
    """The DER certificate in a relay's join answer, if it sent a well-formed one."""
    if not header:
        return None
    try:
        der = base64.b64decode(header, validate=True)
        x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error):
        return None
    return der


def hop_server_context(tls: ClusterTLS, relay_cert: bytes) -> ssl.SSLContext:
    """The node's side: its node certificate, and a client certificate required that is
    exactly the relay's (the only one trusted by this context)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls.cert_path, tls.key_path)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=relay_cert)
    return context


def peer_fingerprint(ssl_object: Any) -> str | None:
    """The fingerprint of the key in the certificate the other end presented (which it
    proved it holds in the TLS 1.3 handshake); None without one."""
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    key = x509.load_der_x509_certificate(der).public_key()
    return fingerprint_of(key) if isinstance(key, ec.EllipticCurvePublicKey) else None
