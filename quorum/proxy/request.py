"""A request as the proxy core sees it: no transport, no framework."""

from __future__ import annotations

from dataclasses import dataclass

from quorum.keys import KeyInfo
from quorum.proxy.upstream import Headers
from quorum.routing import Endpoint


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One request for an endpoint, with its body read and its caller known.

    ``headers`` are the client's, as received. ``key`` is the API key the
    caller was admitted with (its model limits apply), None for a trusted
    caller. ``forwarded``: it came from a peer node (over the LAN or through
    the relay): it is served by this node's own engines only, and the node it
    entered records its usage.
    """

    endpoint: Endpoint
    method: str
    path_qs: str
    headers: Headers
    body: bytes
    key: KeyInfo | None = None
    forwarded: bool = False
    request_id: str | None = None

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The body's MIME type, lower case, without parameters."""
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()
