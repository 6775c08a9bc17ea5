"""The proxy core's second edge: a stream the relay opened to this node.

A request for one of the proxied endpoints enters :func:`quorum.proxy.serve`
directly, as a LAN peer's request does through the HTTP edge: no second
HTTP request to this node's own server, no cluster token sent to itself.
It is a forwarded request (served by this node's own engines; the node it
entered, or the relay, records its usage), with the API key's model limits
when the relay says an app's key opened it. The answer goes back through the
stream as the relay's credit allows, so a large download is never held
whole. Anything else (the node's read-only JSON) is still asked of the HTTP
server on loopback (``LoopbackForwarder``).

Errors before the answer started go back as a response in the caller's API
shape; after, the stream is reset, which the other end shows as a cut answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

from quorum import memory
from quorum.api.endpoints import SERVED, dialect
from quorum.api.errors import error_body
from quorum.api.headers import KEY_MODELS_HEADER
from quorum.errors import ApiError, BodyTooLarge, Forbidden
from quorum.keys import KeyInfo
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead
from quorum.proxy import ProxyContext, ProxyRequest, new_exchange, serve
from quorum.tunnel.client import StreamHandler

_SKIP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class StreamSink:
    """A :class:`quorum.proxy.Sink` over a tunnel stream."""

    __slots__ = ("_stream", "started")

    def __init__(self, stream: TunnelStream) -> None:
        self._stream = stream
        self.started = False

    async def start(
        self, status: int, headers: Mapping[str, str], content_length: int | None = None
    ) -> None:
        out = [(k, v) for k, v in headers.items() if k.lower() not in _SKIP]
        if content_length is not None:
            out.append(("Content-Length", str(content_length)))
        self.started = True
        self._stream.send_response(ResponseHead(status, tuple(out)))

    async def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        await self.start(status, headers, len(body))
        await self._stream.send_all(body)
        await self._stream.send_eof()

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def end(self) -> None:
        await self._stream.send_eof()

    def abort(self) -> None:
        self._stream.reset(ResetCode.INTERNAL, "the answer broke off")


def key_of(head: RequestHead) -> KeyInfo | None:
    """The API key's limits the relay attached, if an app's key opened the stream."""
    for name, value in head.headers:
        if name.lower() == KEY_MODELS_HEADER.lower():
            models = tuple(m for m in value.split(",") if m) if value != "*" else None
            return KeyInfo("relay", "relay", "qk_", models, None)
    return None


class EdgeContext(ProxyContext, Protocol):
    """What this edge reads of the node beyond the core's needs (``NodeContext`` is one)."""

    @property
    def sharing_paused(self) -> bool: ...

    @property
    def max_body_bytes(self) -> int: ...


class CoreStreamHandler:
    """``TunnelClient``'s ``serve_stream``: proxied endpoints into the core, the rest to
    the node's own HTTP server (``fallback``)."""

    def __init__(self, ctx: EdgeContext, fallback: StreamHandler) -> None:
        self._ctx = ctx
        self._fallback = fallback

    async def __call__(self, head: RequestHead, stream: TunnelStream) -> None:
        path = urlsplit(head.path).path
        endpoint = SERVED.get(path)
        if endpoint is None or head.method != "POST":
            await self._fallback(head, stream)
            return
        ctx = self._ctx
        sink = StreamSink(stream)
        try:
            if ctx.sharing_paused:
                raise Forbidden(
                    "This node has paused sharing; only its own machine may use it now.",
                    code="sharing_paused",
                )
            body = await _read(stream, ctx.max_body_bytes, _declared(head))
            request = ProxyRequest(
                endpoint=endpoint,
                method=head.method,
                path_qs=head.path,
                headers=tuple((k, v) for k, v in head.headers if k.lower() not in _SKIP),
                body=body,
                key=key_of(head),
                forwarded=True,
                request_id=next((v for k, v in head.headers if k.lower() == "x-request-id"), None),
            )
            with memory.PROCESS.holding(len(body)):
                await serve(ctx, request, sink, new_exchange(request))
        except ApiError as err:
            if sink.started:
                stream.reset(ResetCode.INTERNAL, err.message)
                return
            payload = json.dumps(error_body(err, dialect(path))).encode()
            headers = {"Content-Type": "application/json", **err.headers()}
            await sink.whole(err.status, headers, payload)


async def _read(stream: TunnelStream, limit: int, declared: int | None = None) -> bytes:
    """The whole body, held once: with its ``Content-Length``, straight into a buffer of
    that size; without, the chunks as they came, joined at the end."""
    if declared is not None and 0 < declared <= limit:
        return await memory.read_sized(stream, declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The request body is too large (over {limit} bytes).")
        chunks.append(chunk)
    return b"".join(chunks)


def _declared(head: RequestHead) -> int | None:
    for name, value in head.headers:
        if name.lower() == "content-length":
            return int(value) if value.isdigit() else None
    return None
