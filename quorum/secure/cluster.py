"""What members derive alone from the cluster token, and the certificates they sign.

Every value comes from the token through HKDF-SHA256 with its own ``info`` label,
so knowing one (a discriminator seen in an advert, the CA's public key) says
nothing about the token or about the others:

- the **cluster CA key** (P-256, ``ec.derive_private_key``): every member makes
  the same key, hence the same CA (same subject, same key), and signs its own
  node certificate with it. A peer's certificate that chains to the CA proves
  its holder knew the token when it was made; the token itself never leaves.
- the **discriminator**: 8 hex digits in the mDNS advert telling nodes of
  different clusters apart. It proves nothing (anyone may copy it) and nothing
  trusts it: membership is decided only by the TLS handshake.

A node certificate names its node id in the subject's common name (for people)
and in two DNS names that TLS clients check with the stdlib's host name
verification (:func:`node_dns_name`): one for the node id alone, one for the
node id and the short fingerprint of its identity key (what its advert says).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quorum.secure.identity import Identity, fingerprint_of

_INFO_CA_KEY = b"quorum/v1/cluster-ca-key"
_INFO_CA_SERIAL = b"quorum/v1/cluster-ca-serial"
_INFO_DISCRIMINATOR = b"quorum/v1/discovery-discriminator"
_DISCRIMINATOR_MESSAGE = b"quorum cluster discriminator"
DISCRIMINATOR_HEX = 8

# The P-256 group order: a derived scalar is reduced into [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CA_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)
NODE_CERT_DAYS = 365


def _derive(token: str, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        token.encode("utf-8")
    )


def cluster_discriminator(token: str) -> str:
    """8 hex digits shared by the nodes of one cluster: an HMAC of a constant under a
    key derived from the token. Tells clusters apart; proves nothing."""
    key = _derive(token, _INFO_DISCRIMINATOR)
    return hmac.new(key, _DISCRIMINATOR_MESSAGE, hashlib.sha256).hexdigest()[:DISCRIMINATOR_HEX]


def ca_key(token: str) -> ec.EllipticCurvePrivateKey:
    """The cluster CA's key: the same on every member (and at a relay that saw the token)."""
    scalar = int.from_bytes(_derive(token, _INFO_CA_KEY, 48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def node_dns_name(node_id: str, identity: str | None = None) -> str:
    """A DNS name a node certificate carries for ``node_id`` (any id fits a DNS label);
    with ``identity`` (a short key fingerprint), the one that names its key too."""
    name = hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:32] + ".node.quorum"
    return name if identity is None else f"{identity}.{name}"


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True, slots=True)
class ClusterCA:
    """The cluster CA every member of one token derives: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def from_token(cls, token: str) -> ClusterCA:
        key = ca_key(token)
        public = key.public_key()
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "quorum cluster " + ca_id(public))]
        )
        serial = int.from_bytes(_derive(token, _INFO_CA_SERIAL, 16), "big") >> 1 or 1
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(_CA_NOT_BEFORE)
            .not_valid_after(_CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                _CA_USAGE,
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def cert_pem(self) -> str:
        return _pem(self.cert)

    @property
    def public_key_pem(self) -> str:
        """The CA's public key (what a relay may keep: it lets it verify, never sign)."""
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def cross_signed_by(self, older: ClusterCA) -> x509.Certificate:
        """This CA certified by ``older`` (a previous token's CA), for token rotation.

        Sent after a node's certificate, it lets members that trust only the older CA
        verify a certificate this CA signed (node -> this CA -> older CA); members that
        trust this CA stop at it. Path length 1 on the roots allows this one step.
        """
        public = self.key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(self.cert.subject)
            .issuer_name(older.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_CA_NOT_BEFORE)
            .not_valid_after(_CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(older.key.public_key()),
                critical=False,
            )
            .sign(older.key, hashes.SHA256())
        )

    def issue(
        self, identity: Identity, node_id: str, now: datetime.datetime | None = None
    ) -> x509.Certificate:
        """A certificate for ``node_id``'s identity key, signed by this CA."""
        now = now or datetime.datetime.now(datetime.UTC)
        public = identity.key.public_key()
        ca_public = self.key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))  # clocks of a LAN differ a little
            .not_valid_after(now + datetime.timedelta(days=NODE_CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(node_dns_name(node_id)),
                        x509.DNSName(node_dns_name(node_id, identity.short)),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def ca_id(public: ec.EllipticCurvePublicKey) -> str:
    """16 hex digits naming a cluster CA (in its subject, so two CAs never share a name)."""
    return fingerprint_of(public)[:16]


def token_ca_id(token: str) -> str:
    """The id of the cluster CA ``token`` derives."""
    return ca_id(ca_key(token).public_key())
