"""A request of the relay's public ``/v1`` to a node, inside TLS between relay and node.

``HopStream`` has ``LocalStream``'s calls (``send_body``, ``response``,
``body``, ``cancel``), so the public handler serves it the same way. It is used
for a node that said it serves the hop (``HOP_CAPABILITY`` in its hello) and
joined with a certificate, i.e. whose key the relay knows; any other node gets
the plain stream as before (``docs/security.md``). On the stream the relay
opened at ``HOP_PATH``:

1. the node answers the outer head with 200 at once;
2. TLS 1.3, the relay as the client with its own certificate
   (``quorum.secure.hop``); the relay checks that the node's certificate holds
   the key bound to the node's id, before it sends a byte of the request;
3. the request inside (``quorum.secure.frames``): head, body, end; then the
   answer the same way back, frame by frame as the app reads it.

A node that fails step 1 or 2 has processed nothing: the handler may try
another (``StreamRefused``). The relay holds one TLS session per node to resume
(no certificate signed or checked again); a new node key never resumes one.

A node another relay of the mesh holds is reached the same way, through that
relay (``relay.mesh``), which passes on only ciphertext: the outer head names
this relay's certificate (``RELAY_CERT_HEADER``), which the node's relay passes
to the node (a node's own streams lose that header at the relay), and the node
trusts it for that stream. The node's key is the one its relay announced,
checked first against the binding in the shared store (``BoundKeys``): an
announcement crossed the mesh, the binding did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace

from aiohttp import web

from quorum.errors import ApiError, StreamBroken, StreamRefused, UpstreamFailed
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead
from quorum.secure.frames import HEAD_MAX, Framed
from quorum.secure.hop import HOP_PATH, RELAY_CERT_HEADER, RelayIdentity, peer_fingerprint
from quorum.secure.stream import TLSFailed, TLSStream
from relay.store import Store

log = logging.getLogger("relay.hop")

SESSIONS_KEPT = 4096
_CERT_HEADER = RELAY_CERT_HEADER.lower()


class Sessions:
    """TLS sessions to resume, per (cluster, node id, key): bounded, oldest dropped."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, str], ssl.SSLSession] = {}

    def get(self, key: tuple[str, str, str]) -> ssl.SSLSession | None:
        return self._kept.get(key)

    def put(self, key: tuple[str, str, str], session: ssl.SSLSession) -> None:
        self._kept.pop(key, None)
        self._kept[key] = session
        while len(self._kept) > SESSIONS_KEPT:
            del self._kept[next(iter(self._kept))]

    def drop(self, key: tuple[str, str, str]) -> None:
        self._kept.pop(key, None)


class BoundKeys:
    """The keys the shared store binds to nodes another relay holds, once confirmed there
    (bounded). A binding stays while its node lives; a removed node's key is refused at
    every relay's join, so a confirmed one need not be read again."""

    def __init__(self) -> None:
        self._confirmed: dict[tuple[str, str, str], None] = {}

    async def confirmed(self, store: Store, cluster_id: str, node_id: str, key: str) -> bool:
        """Whether ``key`` is the one bound to ``node_id`` in the store (and not removed)."""
        wanted = (cluster_id, node_id, key)
        if wanted in self._confirmed:
            return True
        keys = await asyncio.to_thread(store.node_keys, cluster_id)
        if not any(
            k.node_id == node_id and k.fingerprint == key and k.removed_at is None for k in keys
        ):
            return False
        self._confirmed[wanted] = None
        while len(self._confirmed) > SESSIONS_KEPT:
            del self._confirmed[next(iter(self._confirmed))]
        return True


class Hop:
    """The relay's side of the hop: its identity (made at start, in memory), the TLS
    sessions it may resume with nodes, and the keys of other relays' nodes it checked."""

    def __init__(self, identity: RelayIdentity | None = None) -> None:
        self.identity = identity or RelayIdentity.generate()
        self.sessions = Sessions()
        self.bound = BoundKeys()


HOP: web.AppKey[Hop] = web.AppKey("relay_hop", Hop)


def outer_head(through: RelayIdentity | None = None) -> RequestHead:
    """What the tunnel carries in clear for the hop: a path, nothing of the request; and,
    ``through`` another relay, the certificate of this one for the node to trust."""
    headers = () if through is None else ((RELAY_CERT_HEADER, through.header_value),)
    return RequestHead("POST", HOP_PATH, headers)


def unnamed(head: RequestHead) -> RequestHead:
    """``head`` of a stream a node opened, without a relay certificate: only a relay names
    the one a node trusts for a hop."""
    if not any(k.lower() == _CERT_HEADER for k, _ in head.headers):
        return head
    return replace(head, headers=tuple(h for h in head.headers if h[0].lower() != _CERT_HEADER))


class HopStream:
    def __init__(
        self,
        stream: TunnelStream,
        node_name: str,
        head: RequestHead,
        hop: Hop,
        fingerprint: str,
        session_key: tuple[str, str, str],
    ) -> None:
        self.stream = stream
        self.node_name = node_name
        self._head = head
        self._fingerprint = fingerprint
        self._sessions = hop.sessions
        self._session_key = session_key
        self._tls = TLSStream(
            stream,
            hop.identity.client,
            server_side=False,
            session=hop.sessions.get(session_key),
        )
        self._framed = Framed(self._tls)
        self._sent: asyncio.Task[None] | None = None
        self._payload = b""

    async def send_body(self, data: bytes) -> None:
        """Send the request (head and ``data``) inside TLS; errors come out of ``response``."""
        self._payload = data
        with contextlib.suppress(ApiError, TLSFailed):
            await self._send()

    def _send(self) -> asyncio.Task[None]:
        if self._sent is None:
            self._sent = asyncio.ensure_future(self._exchange_start())
        return self._sent

    async def _exchange_start(self) -> None:
        outer = await self.stream.response()
        if outer.status != 200:
            raise StreamRefused(f"node {self.node_name} does not serve the relay's TLS hop.")
        try:
            await self._tls.handshake()
        except TLSFailed as exc:
            self._sessions.drop(self._session_key)
            raise StreamRefused(f"node {self.node_name}: TLS with it failed ({exc}).") from None
        if peer_fingerprint(self._tls.ssl_object) != self._fingerprint:
            self._sessions.drop(self._session_key)
            self.cancel("not the key bound to this node")
            log.warning("node %s answered the hop with another key than its own", self.node_name)
            raise StreamRefused(f"node {self.node_name} did not present its own key.")
        head = {
            "method": self._head.method,
            "path": self._head.path,
            "headers": [list(h) for h in self._head.headers],
        }
        await self._framed.write(json.dumps(head).encode())
        await self._framed.write_body(self._payload)
        await self._framed.write(b"")

    @property
    def response(self) -> Awaitable[ResponseHead]:
        return self._response()

    async def _response(self) -> ResponseHead:
        await self._send()
        try:
            raw = await self._framed.read_or_end(HEAD_MAX)
        except StreamBroken as exc:
            raise UpstreamFailed(f"node {self.node_name}: {exc}") from None
        if raw is None:
            raise UpstreamFailed(f"node {self.node_name} ended the stream without an answer.")
        session = self._tls.session
        if session is not None:
            self._sessions.put(self._session_key, session)
        try:
            answer = json.loads(raw)
            headers = tuple((str(k), str(v)) for k, v in answer["headers"])
            return ResponseHead(int(answer["status"]), headers)
        except (ValueError, KeyError, TypeError):
            self.cancel("malformed answer")
            raise UpstreamFailed(f"node {self.node_name}'s answer is malformed.") from None

    async def body(self) -> AsyncIterator[bytes]:
        """The answer's body, frame by frame; credit returns as each is passed on."""
        while True:
            try:
                frame = await self._framed.read()
            except StreamBroken as exc:
                raise UpstreamFailed(f"node {self.node_name}: {exc}") from None
            if not frame:
                self.stream.send_eof_nowait()  # our half ends: the node closes its own
                return
            yield frame

    def cancel(self, why: str) -> None:
        """Stop the stream if it still runs (the client went away, or a timeout)."""
        if self._sent is not None and not self._sent.done():
            self._sent.cancel()
        self.stream.reset(ResetCode.CANCEL, why)
