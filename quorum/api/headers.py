"""Which headers a hop passes on. Shared by every Quorum hop: node proxy, tunnel, relay's /v1.

A hop reads the whole request body and sends it with its own framing, and
sets its own credentials and request id, so it drops those headers of the
request it got; it recomputes the framing and date of the answer it passes
back, so it drops those of the response.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_HEADER = "X-Quorum-Hop"
"""Set on a request one node forwards to another: it is never forwarded again."""

KEY_MODELS_HEADER = "X-Quorum-Key-Models"
"""Set by the relay on a stream an app's API key opened: the models the key may use
(comma-separated; ``*`` for all), checked again where the request is routed."""

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
"""RFC 9110's connection-specific headers: they never cross a proxy."""

REQUEST_DROP = HOP_BY_HOP | frozenset(
    h.lower()
    for h in (
        "Host",
        "Content-Length",
        "Content-Encoding",  # only identity is accepted (``quorum.api.body``)
        "Accept-Encoding",
        "Authorization",  # the hop sets its own credential, if any
        "X-Api-Key",  # Anthropic's SDKs send their key here
        "Cookie",  # a browser's cookies for this host (a dashboard session) are not the next's
        "X-Request-Id",  # set by the hop: the client's own, or a new one
        HOP_HEADER,
        KEY_MODELS_HEADER,  # only the relay says what a key may use
    )
)
"""Request headers a hop never passes on."""

RESPONSE_DROP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Content-Length",
        "Content-Encoding",
        "Server",
        "Date",
    )
)
"""Response headers a hop recomputes instead of passing on."""


def forwarded_request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers a hop passes on: all but ``REQUEST_DROP`` and those the
    request's ``Connection`` header names as connection-specific (RFC 9110, 7.6.1)."""
    items = list(headers)
    named = {
        token.strip().lower()
        for name, value in items
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [(k, v) for k, v in items if k.lower() not in REQUEST_DROP and k.lower() not in named]
