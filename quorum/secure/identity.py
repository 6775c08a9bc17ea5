"""This node's identity: an EC P-256 key made on first start, kept 0600 in the data dir.

The identity's fingerprint is SHA-256 of the public key's DER SubjectPublicKeyInfo:
the same value ``openssl x509 -pubkey | openssl pkey -pubin -outform der |
sha256sum`` gives, and the base64 of it is what ``curl --pinnedpubkey
sha256//...`` pins. The short form (first 16 hex digits) is for people and for
the TXT record.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quorum.errors import QuorumError

log = logging.getLogger("quorum.secure")

KEY_FILE = "identity-key.pem"
SHORT_HEX = 16


def fingerprint_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, 64 lower-case hex digits."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def short_fingerprint(fingerprint: str) -> str:
    """The first 16 hex digits of a fingerprint (what the TXT record and people show)."""
    return fingerprint[:SHORT_HEX]


def pin_of(fingerprint: str) -> str:
    """The fingerprint as ``curl --pinnedpubkey`` wants it: ``sha256//<base64>``."""
    return "sha256//" + base64.b64encode(bytes.fromhex(fingerprint)).decode()


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's identity key and its fingerprints."""

    key: ec.EllipticCurvePrivateKey
    fingerprint: str

    @property
    def short(self) -> str:
        return short_fingerprint(self.fingerprint)

    @property
    def pin(self) -> str:
        return pin_of(self.fingerprint)

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePrivateKey) -> Identity:
        return cls(key, fingerprint_of(key.public_key()))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """The key in ``data_dir``, made there (0600, written whole) when it is missing.

        A key file that is not a P-256 private key stops the node: replacing it
        silently would change the node's identity behind its owner's back.
        """
        path = data_dir / KEY_FILE
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return cls._create(path)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise QuorumError(
                f"{path} is not a PEM private key; move it away to make a new identity"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise QuorumError(f"{path} is not an EC P-256 key; move it away to make a new identity")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # someone loosened it: only the owner may read a private key
        return cls.from_key(key)

    @classmethod
    def _create(cls, path: Path) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)  # the umask may have narrowed it further, never widened: be exact
        try:
            os.link(tmp, path)  # never replaces a key another process wrote meanwhile
        except FileExistsError:
            os.unlink(tmp)
            return cls.load_or_create(path.parent)
        os.unlink(tmp)
        identity = cls.from_key(key)
        log.info("made this node's identity key (fingerprint %s)", identity.short)
        return identity
