"""Today's way to serve a stream the relay opened: ask this node's own HTTP server.

The request goes to the node's server on loopback with the hop header and
this cluster's token, the path a LAN peer's forwarded request takes; its
answer streams back chunk by chunk, as the relay's credit allows. A
transport-free proxy core is to take this over (``TunnelClient``'s
``serve_stream``); until then this is the default.
"""

from __future__ import annotations

import aiohttp

from quorum.api.headers import HOP_HEADER
from quorum.http import request_body
from quorum.link import TunnelStream
from quorum.protocol import RequestHead, ResetCode, ResponseHead

_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_REPLACED = frozenset({"authorization", HOP_HEADER.lower()})


async def read_request_body(stream: TunnelStream, limit: int) -> bytes | None:
    """The whole request body; ``None`` (and the stream reset TOO_LARGE) past ``limit``."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            stream.reset(ResetCode.TOO_LARGE, "the request body is too large")
            return None
    return bytes(body)


class LoopbackForwarder:
    """A ``StreamHandler`` that forwards each stream to ``local_url`` over HTTP."""

    def __init__(
        self, session: aiohttp.ClientSession, local_url: str, token: str, max_body: int
    ) -> None:
        self._session = session
        self._local_url = local_url
        self._token = token
        self._max_body = max_body

    async def __call__(self, head: RequestHead, stream: TunnelStream) -> None:
        body = await read_request_body(stream, self._max_body)
        if body is None:
            return
        headers = [
            (k, v)
            for k, v in head.headers
            if k.lower() not in _SKIP_HEADERS and k.lower() not in _REPLACED
        ]
        headers += [(HOP_HEADER, "1"), ("Authorization", f"Bearer {self._token}")]
        try:
            async with self._session.request(
                head.method,
                self._local_url + head.path,
                data=request_body(body),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                out_headers = tuple(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in _SKIP_HEADERS
                )
                length = resp.headers.get("Content-Length")
                if length is not None:
                    out_headers += (("Content-Length", length),)
                stream.send_response(ResponseHead(resp.status, out_headers))
                async for chunk in resp.content.iter_any():
                    await stream.send_all(chunk)
            await stream.send_eof()
        except aiohttp.ClientError as exc:
            stream.reset(ResetCode.INTERNAL, f"serving failed: {type(exc).__name__}")
