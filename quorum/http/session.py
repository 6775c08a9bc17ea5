"""Helpers for the node's aiohttp client session: request bodies, and sockets that notice
a dead peer."""

from __future__ import annotations

import io
import socket
from typing import Any

# aiohttp warns (ResourceWarning) when given more than 1 MiB as raw bytes: it
# would copy them in one go on the event loop. A BytesIO over the same bytes is
# streamed in chunks instead (and CPython shares the buffer, so nothing is copied).
_RAW_BODY_LIMIT = 1 << 20


def request_body(payload: bytes) -> bytes | io.BytesIO:
    """``payload`` in the form aiohttp sends best."""
    return payload if len(payload) <= _RAW_BODY_LIMIT else io.BytesIO(payload)


# A peer whose machine vanished (cable pulled, laptop asleep) sends no RST: without
# these, a request on a pooled connection to it would wait for the header timeout
# (minutes). Keepalive probes are answered by a live peer's kernel whatever its
# engine is doing, so a slow generation is never cut; a dead peer is noticed within
# about DEAD_PEER_S, and the request fails over or ends with a visible error.
DEAD_PEER_S = 20


def socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """Sockets for the node's outgoing connections, with dead-peer detection."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", DEAD_PEER_S // 2),
            ("TCP_KEEPINTVL", DEAD_PEER_S // 4),
            ("TCP_KEEPCNT", 2),
            ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass  # a platform without some option: the header timeout still bounds the wait
    return sock
