"""Which relay a node trusts for a stream of the relay's public ``/v1`` (``quorum.secure.hop``).

A node trusts, for a hop stream, the certificate of the relay it joined (given in
the relay's answer to its join). A relay of the same mesh may reach the node
through that relay (an app called the other one): then the stream's outer head
names the other relay's certificate (``RELAY_CERT_HEADER``), which the node's own
relay passed on. The node's relay removes that header from every stream a node
opened, so only a relay names it; the node then trusts exactly that certificate
for that stream. A malformed one is no hop at all (``None``: the stream is
refused). Contexts are kept per certificate (a few relays), so a relay's TLS
sessions resume across its streams.
"""

from __future__ import annotations

import ssl

from quorum.protocol import RequestHead
from quorum.secure import ClusterTLS
from quorum.secure.hop import RELAY_CERT_HEADER, hop_server_context, relay_cert_of

RELAYS_KEPT = 16
_HEADER = RELAY_CERT_HEADER.lower()


class HopContexts:
    """The TLS contexts a node serves hop streams with: its own relay's, and others'."""

    def __init__(self, tls: ClusterTLS | None, relay_cert: bytes | None) -> None:
        self._tls = tls
        self._own = relay_cert
        self.own = (
            hop_server_context(tls, relay_cert)
            if tls is not None and relay_cert is not None
            else None
        )
        self._others: dict[bytes, ssl.SSLContext] = {}

    def for_head(self, head: RequestHead) -> ssl.SSLContext | None:
        """The context for a hop stream with ``head``; None if it cannot be served."""
        if self.own is None or self._tls is None:
            return None
        named = next((v for k, v in head.headers if k.lower() == _HEADER), None)
        if named is None:
            return self.own
        cert = relay_cert_of(named)
        if cert is None:
            return None
        if cert == self._own:
            return self.own
        context = self._others.pop(cert, None) or hop_server_context(self._tls, cert)
        self._others[cert] = context  # the newest last: the oldest goes first
        while len(self._others) > RELAYS_KEPT:
            del self._others[next(iter(self._others))]
        return context
