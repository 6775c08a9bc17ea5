"""Small HTTP helpers shared by the proxy and the tunnel."""

from __future__ import annotations

import io

# aiohttp warns (ResourceWarning) when given more than 1 MiB as raw bytes: it
# would copy them in one go on the event loop. A BytesIO over the same bytes is
# streamed in chunks instead (and CPython shares the buffer, so nothing is copied).
_RAW_BODY_LIMIT = 1 << 20


def request_body(payload: bytes) -> bytes | io.BytesIO:
    """``payload`` in the form aiohttp sends best."""
    return payload if len(payload) <= _RAW_BODY_LIMIT else io.BytesIO(payload)
