"""Joining a relay as a node: a certificate of the cluster CA and a fresh signature.

With its upgrade request a node sends its node certificate
(``X-Quorum-Node-Cert``, base64 DER) and a proof that it holds the key in it
(``X-Quorum-Node-Proof``: ``<unix time>.<base64url ECDSA-SHA256 signature>``
over a fixed label, its node id and that time). The relay checks that the
certificate was signed by the cluster CA (whose public key it derives, as a
member does, from the token it already checked), that the signature is by the
certificate's key and at most ``PROOF_WINDOW_S`` old, and then binds the node
id to the key's fingerprint: the first key a node id joins with is the only one
that may use that id (``relay/server.py``). A node id alone, or another
member's certificate without its key, gets nothing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quorum.errors import QuorumError
from quorum.secure.cluster import ca_id
from quorum.secure.identity import fingerprint_of
from quorum.secure.tls import ClusterTLS

CERT_HEADER = "X-Quorum-Node-Cert"
PROOF_HEADER = "X-Quorum-Node-Proof"
PROOF_WINDOW_S = 120
_LABEL = b"quorum/v1/relay-join\n"


class JoinRefused(QuorumError):
    """The certificate or the proof does not hold: the connection is refused."""


@dataclass(frozen=True, slots=True)
class Joiner:
    """Who proved itself: the node id its certificate names, its key's fingerprint, and the
    id of the cluster CA that signed the certificate."""

    node_id: str
    fingerprint: str
    ca_id: str = ""


def _message(node_id: str, at: str) -> bytes:
    return _LABEL + node_id.encode("utf-8") + b"\n" + at.encode("ascii")


def join_headers(tls: ClusterTLS, now: float) -> dict[str, str]:
    """The headers a node sends with its upgrade to the relay."""
    at = str(int(now))
    signature = tls.identity.key.sign(_message(tls.node_id, at), ec.ECDSA(hashes.SHA256()))
    der = tls.cert.public_bytes(serialization.Encoding.DER)
    return {
        CERT_HEADER: base64.b64encode(der).decode("ascii"),
        PROOF_HEADER: at + "." + base64.urlsafe_b64encode(signature).decode("ascii"),
    }


def issuer_ca_id(cert_b64: str) -> str | None:
    """The cluster CA id a node certificate names as its issuer (to find its cluster)."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
    except (ValueError, binascii.Error):
        return None
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    text = str(names[0].value) if names else ""
    prefix = "quorum cluster "
    return text[len(prefix) :] if text.startswith(prefix) else None


def verify_join(cert_b64: str, proof: str, ca: ec.EllipticCurvePublicKey, now: float) -> Joiner:
    """Check a node's certificate against the cluster CA's key and its proof; JoinRefused if not."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
        algorithm = cert.signature_hash_algorithm
        if algorithm is None:
            raise JoinRefused("the certificate has no signature algorithm")
        ca.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except (ValueError, binascii.Error, InvalidSignature):
        raise JoinRefused("the certificate is not one of this cluster's") from None
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        raise JoinRefused("the certificate is not valid now")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    node_id = str(names[0].value) if names else ""
    key = cert.public_key()
    if not node_id or not isinstance(key, ec.EllipticCurvePublicKey):
        raise JoinRefused("the certificate names no node")
    at, _, signature = proof.partition(".")
    if not at.isdigit() or abs(now - int(at)) > PROOF_WINDOW_S:
        raise JoinRefused("the proof is stale or malformed")
    try:
        key.verify(
            base64.urlsafe_b64decode(signature), _message(node_id, at), ec.ECDSA(hashes.SHA256())
        )
    except (ValueError, binascii.Error, InvalidSignature):
        raise JoinRefused("the proof is not signed by the certificate's key") from None
    return Joiner(node_id, fingerprint_of(key), ca_id(ca))
