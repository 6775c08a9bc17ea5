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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web

from quorum.errors import ApiError, StreamBroken, StreamRefused, UpstreamFailed
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead
from quorum.secure.frames import HEAD_MAX, Framed
from quorum.secure.hop import HOP_PATH, RelayIdentity, peer_fingerprint
from quorum.secure.stream import TLSFailed, TLSStream

log = logging.getLogger("relay.hop")

SESSIONS_KEPT = 4096


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


class Hop:
    """The relay's side of the hop: its identity (made at start, in memory) and the TLS
    sessions it may resume with nodes."""

    def __init__(self, identity: RelayIdentity | None = None) -> None:
        self.identity = identity or RelayIdentity.generate()
        self.sessions = Sessions()


HOP: web.AppKey[Hop] = web.AppKey("relay_hop", Hop)


def outer_head() -> RequestHead:
    """What the tunnel carries in clear for the hop: a path, nothing of the request."""
    return RequestHead("POST", HOP_PATH, ())


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
