"""HTTP helpers shared by the proxy and the tunnel, and a lean client for local engines.

- :mod:`.session`: request bodies and sockets for the node's aiohttp session.
- :mod:`.connection`: one connection to an engine and its answer's parser.
- :mod:`.chunked`: the whole chunks of a read, decoded at C speed.
- :mod:`.pool`: idle connections by address.

:class:`EnginePool` is an HTTP/1.1 keep-alive client for the engines on this
machine (loopback only: no TLS, no proxies, no redirects, no cookies). The
proxy's hot path is one request and one answer per call; aiohttp's client
costs several times what the bytes do there (a request object, a connector
lookup, a payload registry, a timeout context per request). Here a request is
one ``write`` of pre-joined bytes on a pooled connection, and the answer is
parsed by a small state machine: a ``Content-Length``, chunked or
read-until-close body, handed over as it arrives.

Rules of a connection:

- One request at a time. It goes back to the pool only when its answer was
  read to the end and both sides keep it alive; an unfinished answer closes it,
  which is how an engine learns that nobody waits any more.
- An idle connection that hears anything (data or EOF) is closed; one idle for
  ``IDLE_S`` is closed by the pool.
- Unread body bytes past ``READ_HIGH`` pause reading from the engine: a slow
  client never grows the node's memory.
- Of an answer passed on as it comes (``next_chunk(hold=True)``), pieces that
  come within ``HOLD_S`` (1 ms) of the last hand-over are handed over together
  at the end of that time (sooner with ``HOLD_BYTES`` or the body's end), with
  reading paused meanwhile: an engine streaming faster than that costs one read
  and one write downstream per millisecond, not one per event. The first piece,
  and any piece after a pause, goes at once; an answer read whole never waits.
- Errors are plain: ``OSError`` (connect), :class:`ConnectTimeout`,
  ``TimeoutError`` (no answer head in time), :class:`HttpProtocolError`,
  :class:`ConnectionLost` (in :mod:`quorum.errors`). The proxy maps them once, in
  ``server/upstream.py``.
"""

from __future__ import annotations

from quorum.errors import ConnectionLost, ConnectTimeout, HttpProtocolError
from quorum.http.connection import (
    HEAD_LIMIT,
    IDLE_S,
    LEAN_BODY_LIMIT,
    LINE_LIMIT,
    READ_HIGH,
    EngineConnection,
)
from quorum.http.pool import EnginePool
from quorum.http.session import DEAD_PEER_S, BufferPayload, request_body, socket_factory

__all__ = [
    "DEAD_PEER_S",
    "HEAD_LIMIT",
    "IDLE_S",
    "LEAN_BODY_LIMIT",
    "LINE_LIMIT",
    "READ_HIGH",
    "BufferPayload",
    "ConnectTimeout",
    "ConnectionLost",
    "EngineConnection",
    "EnginePool",
    "HttpProtocolError",
    "request_body",
    "socket_factory",
]
