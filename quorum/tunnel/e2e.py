"""Node-to-node streams through the relay, encrypted end to end by the two nodes.

The relay routes a stream by the node id in its head and pipes its bytes; for
a stream between two nodes it now sees only this:

- the outer head: ``POST /quorum/v1/e2e`` to node N, no headers; the serving
  node answers ``200`` at once, so both ends can talk;
- then TLS 1.3 between the two nodes over the stream's bytes
  (:class:`quorum.secure.stream.TLSStream`), mutually authenticated with the
  cluster certificates: the opener checks that the certificate names node N,
  the server that the opener's chains to the cluster CA. The relay holds no
  key of either; what it learns is which node talks to which, sizes and timing.

Inside TLS, for each request: one frame with the head (JSON: method, path and
headers; or status and headers), body frames, and an empty frame that ends the
body; the answer the same way back. A stream (a *channel*) carries requests one
after another, as HTTP/1.1 keep-alive does: the opener keeps a few idle ones per
node (:class:`Channels`), so the handshake is paid once per channel, and a new
channel resumes the last TLS session with that node. A client that goes away in
the middle of an answer resets its channel; the node closes a channel idle for
``SERVER_IDLE_S``. A frame is a 4-byte big-endian length and that many bytes. A body is
sent in frames of at most ``FRAME_MAX`` bytes, and read one frame at a time, so
the tunnel's flow-control windows still bound what either node holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from multidict import CIMultiDict

from quorum.errors import QuorumError, StreamBroken, UpstreamFailed
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead
from quorum.secure import node_dns_name
from quorum.secure.frames import FRAME_MAX, HEAD_MAX, Framed
from quorum.secure.stream import TLSFailed, TLSStream

E2E_PATH = "/quorum/v1/e2e"
SERVER_IDLE_S = 30.0  # a channel with no request for this long is closed by the node
CLIENT_IDLE_S = 20.0  # the opener reuses a channel idle for less (so the node never just closed it)
POOL_PER_NODE = 4


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        raise StreamBroken("the head through the relay is malformed")
    return tuple((str(k), str(v)) for k, v in raw)


# -- the opener's side ---------------------------------------------------------


class ChannelClosed(QuorumError):
    """A kept channel the node had closed (idle too long) before our request: not served."""


class Channel:
    """One end-to-end TLS connection to a node over one tunnel stream: requests one after
    another on it, as HTTP/1.1 keep-alive, so only the first pays the handshake."""

    __slots__ = ("framed", "idle_since", "node_id", "stream", "tls")

    def __init__(self, stream: TunnelStream, tls: TLSStream, node_id: str) -> None:
        self.stream = stream
        self.tls = tls
        self.framed = Framed(tls)
        self.node_id = node_id
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        return self.stream.reset_info is None and not self.stream.at_eof

    def close(self) -> None:
        """End our half: the node ends its own and forgets the channel."""
        with contextlib.suppress(Exception):
            self.stream.send_eof_nowait()

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
        on_done: Callable[[Channel], None],
        *,
        reused: bool,
    ) -> SecureResponse:
        head = {"method": method, "path": path, "headers": [list(h) for h in headers]}
        framed = self.framed
        sent = json.dumps(head).encode()
        if not body:
            await framed.write(sent, b"")
        elif len(body) <= FRAME_MAX:
            await framed.write(sent, body, b"")  # one TLS record for a small request
        else:
            await framed.write(sent)
            await framed.write_body(body)
            await framed.write(b"")
        async with asyncio.timeout(header_timeout_s):
            raw = await framed.read_or_end(HEAD_MAX)
        if raw is None:
            if reused:
                raise ChannelClosed("the node closed this channel")
            raise StreamBroken("the node ended the stream without an answer")
        try:
            answer = json.loads(raw)
            status, out = int(answer["status"]), _headers(answer["headers"])
        except (ValueError, KeyError, TypeError):
            self.stream.reset(ResetCode.CANCEL, "malformed answer")
            raise UpstreamFailed("The node's answer through the relay is malformed.") from None
        return SecureResponse(self, status, out, on_done)


class SecureResponse:
    """The answer of a node, read from inside TLS: the proxy's ``Upstream`` shape. Read
    to its end, its channel goes back to the pool (``on_done``); let go before, it is reset."""

    def __init__(
        self,
        channel: Channel,
        status: int,
        headers: Sequence[tuple[str, str]],
        on_done: Callable[[Channel], None],
    ) -> None:
        self._channel = channel
        self._on_done = on_done
        self._done = False
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers)
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self._done:
            frame = await self._channel.framed.read_batch()
            if not frame:
                self._done = True
                self._on_done(self._channel)
                return
            yield frame

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UpstreamFailed("the answer through the relay is too large")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Stop the stream if the answer is unfinished (the client went away)."""
        if not self._done:
            self._channel.stream.reset(ResetCode.CANCEL, "the client went away")


class Channels:
    """A node's end-to-end channels to other nodes: kept open between requests (a few per
    node, for ``CLIENT_IDLE_S``), and TLS sessions to resume when a new one is needed."""

    def __init__(self, context: ssl.SSLContext, clock: Callable[[], float] = time.monotonic):
        self._context = context
        self._clock = clock
        self._idle: dict[str, list[Channel]] = {}
        self._sessions: dict[str, ssl.SSLSession] = {}

    def take(self, node_id: str) -> Channel | None:
        """The most recently used idle channel to ``node_id`` that is still good."""
        idle = self._idle.get(node_id)
        now = self._clock()
        while idle:
            channel = idle.pop()
            if channel.usable and now - channel.idle_since < CLIENT_IDLE_S:
                return channel
            channel.close()
        return None

    def put(self, channel: Channel) -> None:
        if not channel.usable:
            channel.close()
            return
        idle = self._idle.setdefault(channel.node_id, [])
        if len(idle) >= POOL_PER_NODE:
            idle.pop(0).close()
        channel.idle_since = self._clock()
        idle.append(channel)

        def on_change(stream: TunnelStream) -> None:
            if stream.at_eof or stream.reset_info is not None:
                channel.close()  # the node closed it: close our half too

        channel.stream.listener = on_change

    def forget_all(self) -> None:
        self._idle.clear()

    def close_all(self) -> None:
        """Close every idle channel (the relay is draining: let it see no stream left)."""
        for idle in self._idle.values():
            for channel in idle:
                channel.close()
        self._idle.clear()

    async def connect(self, stream: TunnelStream, node_id: str, header_timeout_s: float) -> Channel:
        """TLS as the client on ``stream`` (opened to ``node_id`` at :data:`E2E_PATH`, its
        outer answer in), resuming the last session with that node when there is one
        (TLS 1.3 PSK with a fresh ECDHE: no certificate signed or checked again)."""
        tls = TLSStream(
            stream,
            self._context,
            server_side=False,
            server_hostname=node_dns_name(node_id),
            session=self._sessions.get(node_id),
        )
        try:
            async with asyncio.timeout(header_timeout_s):
                await tls.handshake()
        except TLSFailed as exc:
            stream.reset(ResetCode.CANCEL, "TLS failed")
            self._sessions.pop(node_id, None)
            raise UpstreamFailed(
                f"The node {node_id[:8]} did not prove through the relay that it is the member "
                f"meant ({exc})."
            ) from None
        return Channel(stream, tls, node_id)

    def keep_session(self, channel: Channel) -> None:
        session = channel.tls.session
        if session is not None:
            self._sessions[channel.node_id] = session


# -- the serving side ----------------------------------------------------------


class SecureServerStream:
    """The request as the node's stream handler reads it, and its answer, inside TLS.

    Quacks like the :class:`~quorum.link.TunnelStream` a handler gets: ``async
    for`` / ``receive_some`` for the body, ``send_response`` (kept until the
    first body bytes or the end, since it cannot wait), ``send_all``,
    ``send_eof``, ``reset``.
    """

    def __init__(self, outer: TunnelStream, framed: Framed, head: RequestHead) -> None:
        self._outer = outer
        self._framed = framed
        self.head = head
        self._body_done = False
        self._response: ResponseHead | None = None
        self._response_sent = False
        self._eof_after_response = False
        self.sent_eof = False

    @property
    def reset_info(self) -> Any:
        return self._outer.reset_info

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._body_done:
            return b""
        frame = await self._framed.read()
        if not frame:
            self._body_done = True
        return frame

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while chunk := await self.receive_some():
            yield chunk

    def send_response(self, head: ResponseHead, *, end_stream: bool = False) -> None:
        if self._response is not None:
            raise RuntimeError("a second response head")
        self._response = head
        self._eof_after_response = end_stream

    def _take_head(self) -> bytes | None:
        """The answer's head frame's payload, the first time (then None)."""
        if self._response_sent:
            return None
        if self._response is None:
            raise RuntimeError("body bytes before the response head")
        self._response_sent = True
        head = {
            "status": self._response.status,
            "headers": [list(h) for h in self._response.headers],
        }
        return json.dumps(head).encode()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        head = self._take_head()
        if head is not None and 0 < len(data) <= FRAME_MAX:
            await self._framed.write(head, bytes(data))  # the head and the first piece at once
            return
        if head is not None:
            await self._framed.write(head)
        await self._framed.write_body(bytes(data))

    async def send_eof(self) -> None:
        if self.sent_eof:
            return
        head = self._take_head()
        if head is None:
            await self._framed.write(b"")
        else:
            await self._framed.write(head, b"")  # an answer with no body: head and end at once
        self.sent_eof = True  # of this answer: the channel stays open for the next request

    def reset(self, code: ResetCode = ResetCode.CANCEL, message: str = "") -> None:
        self._outer.reset(code, message)

    async def finish(self) -> None:
        """What a handler left pending: a head sent with ``end_stream``."""
        if self._eof_after_response and not self.sent_eof:
            await self.send_eof()


async def serve(
    stream: TunnelStream,
    context: ssl.SSLContext,
    handler: Any,
    handshake_timeout_s: float = 10.0,
    idle_s: float = SERVER_IDLE_S,
) -> None:
    """Serve one stream opened at :data:`E2E_PATH`: TLS as the server (``context`` asks for a
    member's certificate), then each request inside, one after another, goes to
    ``handler(head, stream)``. Ends (our half ended) when the opener ends its half, or
    after ``idle_s`` without a request; a request left unanswered resets the stream."""
    stream.send_response(ResponseHead(200, ()))
    tls = TLSStream(stream, context, server_side=True)
    framed = Framed(tls)
    try:
        async with asyncio.timeout(handshake_timeout_s):
            await tls.handshake()
    except TLSFailed:
        stream.reset(ResetCode.CANCEL, "TLS failed")  # no member: nothing was read
        return
    except TimeoutError:
        stream.reset(ResetCode.CANCEL, "no TLS handshake in time")
        return
    wait = handshake_timeout_s  # the first request comes with the handshake
    while True:
        try:
            async with asyncio.timeout(wait):
                raw = await framed.read_or_end(HEAD_MAX)
            if raw is None:
                break  # the opener closed the channel
            request = json.loads(raw)
            head = RequestHead(
                str(request["method"]), str(request["path"]), _headers(request["headers"])
            )
        except TimeoutError:
            break  # idle: close it (the opener reuses a channel for less than this)
        except (StreamBroken, ValueError, KeyError, TypeError):
            stream.reset(ResetCode.CANCEL, "no request inside TLS")
            return
        inner = SecureServerStream(stream, framed, head)
        await handler(head, cast(TunnelStream, inner))
        await inner.finish()
        if not inner.sent_eof or stream.reset_info is not None:
            if stream.reset_info is None:
                stream.reset(ResetCode.INTERNAL, "the answer was left unfinished")
            return
        wait = idle_s
    await stream.send_eof()
