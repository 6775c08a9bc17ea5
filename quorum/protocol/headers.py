"""HTTP header facts shared by every Quorum hop (node proxy, tunnel, relay's public /v1)."""

HOP_HEADER = "X-Quorum-Hop"
"""Set on a request one node forwards to another: it is never forwarded again."""

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
