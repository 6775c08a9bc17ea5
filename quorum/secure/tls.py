"""Mutual TLS 1.3 between members: the stdlib ``ssl`` contexts, built once per start.

A node presents the certificate its cluster CA signed for its identity key, and
trusts the CAs of the current token and of every ``cluster.previous_tokens``
(so members not yet moved to a new token still get in); its chain carries the
current CA cross-signed by each previous one, so those members accept it too. As a client it checks
that the server's certificate names the node id it meant to reach
(:func:`quorum.secure.cluster.node_dns_name`, the stdlib's host name check). As
a server it asks for a client certificate but does not require one: a verified
one makes the caller a peer, none leaves it to API keys (``auth`` middleware).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from quorum.secure.cluster import ClusterCA
from quorum.secure.identity import KEY_FILE, Identity

CERT_FILE = "node-cert.pem"


class ClusterTLS:
    """This node's TLS material for one cluster: its certificate and the CAs it trusts."""

    def __init__(
        self,
        identity: Identity,
        node_id: str,
        token: str,
        data_dir: Path,
        previous_tokens: tuple[str, ...] = (),
    ) -> None:
        self.identity = identity
        self.node_id = node_id
        self.ca = ClusterCA.from_token(token)
        self.trusted = (self.ca, *(ClusterCA.from_token(t) for t in previous_tokens))
        self.cert = self.ca.issue(identity, node_id)
        self.cert_path = data_dir / CERT_FILE
        self.key_path = data_dir / KEY_FILE
        chain = [self.cert, *(self.ca.cross_signed_by(older) for older in self.trusted[1:])]
        _write_public(
            self.cert_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        )
        self._cadata = "".join(ca.cert_pem for ca in self.trusted)
        self.server = self._context(ssl.PROTOCOL_TLS_SERVER)
        self.server.verify_mode = ssl.CERT_OPTIONAL
        self.member_server = self._context(ssl.PROTOCOL_TLS_SERVER)  # members only (relayed)
        self.member_server.verify_mode = ssl.CERT_REQUIRED
        self.client = self._context(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, host names checked

    def _context(self, protocol: int) -> ssl.SSLContext:
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.cert_path, self.key_path)
        context.load_verify_locations(cadata=self._cadata)
        return context


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def peer_node_id(ssl_object: Any) -> str | None:
    """The node id of a verified peer certificate on ``ssl_object``; None without one.

    ``getpeercert()`` returns a certificate's fields only once the chain was
    verified against the trusted CAs, so a name read here is a member's.
    """
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
