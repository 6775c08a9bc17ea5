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

Inside TLS, in each direction: one frame with the head (JSON: method, path and
headers; or status and headers), body frames, and an empty frame that ends the
body. A frame is a 4-byte big-endian length and that many bytes. A body is
sent in frames of at most ``FRAME_MAX`` bytes, and read one frame at a time, so
the tunnel's flow-control windows still bound what either node holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from multidict import CIMultiDict

from quorum.errors import StreamBroken, UpstreamFailed
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead
from quorum.secure import node_dns_name
from quorum.secure.stream import TLSFailed, TLSStream

E2E_PATH = "/quorum/v1/e2e"
FRAME_MAX = 256 * 1024
HEAD_MAX = 256 * 1024
_LENGTH = struct.Struct(">I")


class Framed:
    """Length-prefixed frames over a :class:`TLSStream`."""

    __slots__ = ("_buffer", "_tls")

    def __init__(self, tls: TLSStream) -> None:
        self._tls = tls
        self._buffer = bytearray()

    async def write(self, payload: bytes) -> None:
        await self._tls.send_all(_LENGTH.pack(len(payload)) + payload)

    async def write_body(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await self.write(bytes(view[:FRAME_MAX]))
            view = view[FRAME_MAX:]

    async def read(self, limit: int = FRAME_MAX) -> bytes:
        await self._fill(_LENGTH.size)
        (size,) = _LENGTH.unpack_from(self._buffer)
        if size > limit:
            raise StreamBroken(f"a frame of {size} bytes through the relay is over {limit}")
        await self._fill(_LENGTH.size + size)
        frame = bytes(self._buffer[_LENGTH.size : _LENGTH.size + size])
        del self._buffer[: _LENGTH.size + size]
        return frame

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                data = await self._tls.receive_some()
            except TLSFailed as exc:
                raise StreamBroken(f"the stream through the relay broke: {exc}") from None
            if not data:
                raise StreamBroken("the stream through the relay ended in the middle of a frame")
            self._buffer += data


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        raise StreamBroken("the head through the relay is malformed")
    return tuple((str(k), str(v)) for k, v in raw)


# -- the opener's side ---------------------------------------------------------


class SecureResponse:
    """The answer of a node, read from inside TLS: the proxy's ``Upstream`` shape."""

    def __init__(
        self, stream: TunnelStream, framed: Framed, status: int, headers: Sequence[tuple[str, str]]
    ) -> None:
        self._stream = stream
        self._framed = framed
        self._done = False
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers)
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length and length.isdigit() else None

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self._done:
            frame = await self._framed.read()
            if not frame:
                self._done = True
                with contextlib.suppress(Exception):
                    await self._stream.receive_some()  # the outer end, so nothing is reset
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
        """Stop the stream if it still runs (the client went away); give back its credit."""
        self._stream.reset(ResetCode.CANCEL, "the client went away")


async def request(
    stream: TunnelStream,
    context: ssl.SSLContext,
    node_id: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    header_timeout_s: float,
) -> SecureResponse:
    """Send a request inside TLS on ``stream`` (opened to ``node_id`` at :data:`E2E_PATH`,
    its outer answer received) and return once the node's response head is in.

    The handshake, and then the response head once the body is sent, each have
    ``header_timeout_s`` (TimeoutError past it; the caller resets the stream)."""
    tls = TLSStream(stream, context, server_side=False, server_hostname=node_dns_name(node_id))
    framed = Framed(tls)
    try:
        async with asyncio.timeout(header_timeout_s):
            await tls.handshake()
        head = {"method": method, "path": path, "headers": [list(h) for h in headers]}
        await framed.write(json.dumps(head).encode())
        await framed.write_body(body)
        await framed.write(b"")
        await stream.send_eof()
        async with asyncio.timeout(header_timeout_s):
            answer = json.loads(await framed.read(HEAD_MAX))
        status = int(answer["status"])
        out = _headers(answer["headers"])
    except TLSFailed as exc:
        stream.reset(ResetCode.CANCEL, "TLS failed")
        raise UpstreamFailed(
            f"The node {node_id[:8]} did not prove through the relay that it is the member "
            f"meant ({exc})."
        ) from None
    except (ValueError, KeyError, TypeError):
        stream.reset(ResetCode.CANCEL, "malformed answer")
        raise UpstreamFailed("The node's answer through the relay is malformed.") from None
    return SecureResponse(stream, framed, status, out)


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

    async def _send_head(self) -> None:
        if self._response_sent:
            return
        if self._response is None:
            raise RuntimeError("body bytes before the response head")
        self._response_sent = True
        head = {
            "status": self._response.status,
            "headers": [list(h) for h in self._response.headers],
        }
        await self._framed.write(json.dumps(head).encode())

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._send_head()
        await self._framed.write_body(bytes(data))

    async def send_eof(self) -> None:
        if self.sent_eof:
            return
        await self._send_head()
        await self._framed.write(b"")
        self.sent_eof = True
        await self._outer.send_eof()

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
) -> None:
    """Serve one stream opened at :data:`E2E_PATH`: TLS as the server (``context`` asks for a
    member's certificate), then the request inside goes to ``handler(head, stream)``."""
    stream.send_response(ResponseHead(200, ()))
    tls = TLSStream(stream, context, server_side=True)
    framed = Framed(tls)
    try:
        async with asyncio.timeout(handshake_timeout_s):
            await tls.handshake()
            raw = json.loads(await framed.read(HEAD_MAX))
        head = RequestHead(str(raw["method"]), str(raw["path"]), _headers(raw["headers"]))
    except TLSFailed:
        stream.reset(ResetCode.CANCEL, "TLS failed")  # no member: nothing was read
        return
    except (TimeoutError, StreamBroken, ValueError, KeyError, TypeError):
        stream.reset(ResetCode.CANCEL, "no request inside TLS")
        return
    inner = SecureServerStream(stream, framed, head)
    await handler(head, cast(TunnelStream, inner))
    await inner.finish()
