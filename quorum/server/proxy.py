"""The ``/v1`` proxy's HTTP edge: an aiohttp request in, the proxy core, the answer out.

Everything a request goes through is in :mod:`quorum.proxy` (transport-free);
this module only reads the body, builds the core's request, and gives the
core a sink that writes an aiohttp response. Errors raised before the answer
started go to the ``errors`` middleware, which answers them in the caller's
shape. A client that goes away cancels the handler (``handler_cancellation``),
which closes the upstream connection, so the engine stops generating.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from quorum import memory
from quorum.api.headers import HOP_HEADER
from quorum.errors import BodyTooLarge
from quorum.proxy import ProxyRequest, new_exchange, serve
from quorum.routing import Endpoint
from quorum.server.context import ATTEMPTS, CALLER, CONTEXT, KEY_INFO, Caller


class _Response(web.StreamResponse):
    """Its head waits for the first write of the body (which the core makes at once) and
    goes out with it, in one write: one packet and one wake-up of the client, not two."""

    _send_headers_immediately = False


class ResponseSink:
    """A :class:`quorum.proxy.Sink` over one aiohttp request."""

    __slots__ = ("_request", "response")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def start(
        self, status: int, headers: Mapping[str, str], content_length: int | None = None
    ) -> None:
        response = _Response(status=status, headers=headers)
        if content_length is not None:
            response.content_length = content_length
        self.response = response
        await response.prepare(self._request)

    async def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        # Returned by the handler: aiohttp writes the head and the body at once.
        self.response = web.Response(body=body, status=status, headers=headers)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        try:
            await self.response.write(data)
        except ConnectionResetError:
            raise _gone() from None

    async def end(self) -> None:
        assert self.response is not None
        try:
            await self.response.write_eof()
        except ConnectionResetError:
            raise _gone() from None

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.close()


def _gone() -> asyncio.CancelledError:
    """The client hung up before a write (aiohttp had not cancelled the handler yet): end the
    answer as a cancelled one, a 499 in the access log, never a 500 with a traceback."""
    return asyncio.CancelledError("the client closed the connection")


async def read_body(request: web.Request) -> bytes:
    """The request body, held once (aiohttp's ``read()`` briefly holds a large upload twice);
    with no ``Content-Length``, aiohttp's own read."""
    declared = request.content_length
    if not declared:
        return await request.read()
    return await memory.read_sized(request.content.iter_any(), declared)


def handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for one ``/v1`` endpoint."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
        declared = request.content_length
        if declared is not None and declared > ctx.max_body_bytes:
            # Refused from the head alone: nothing of a body that cannot be taken is read.
            raise BodyTooLarge(
                f"The request body is too large: {declared} bytes, and this node takes at "
                f"most {ctx.max_body_bytes} (node.max_body_mb)."
            )
        proxied = ProxyRequest(
            endpoint=endpoint,
            method=request.method,
            path_qs=request.rel_url.path_qs,
            headers=tuple(request.headers.items()),
            body=await read_body(request),
            key=request.get(KEY_INFO),
            # Only a peer node's hop is a hop: anyone else saying so is ignored (it
            # would skip usage accounting and routing onward).
            forwarded=HOP_HEADER in request.headers and request.get(CALLER) is Caller.PEER,
            request_id=request.headers.get("X-Request-Id"),
        )
        ex = new_exchange(proxied)
        sink = ResponseSink(request)
        try:
            with memory.PROCESS.holding(len(proxied.body)):
                await serve(ctx, proxied, sink, ex)
        finally:
            request[ATTEMPTS] = ex.attempts
        assert sink.response is not None
        return sink.response

    return handle
