from __future__ import annotations

import io
import socket

from quorum.http import DEAD_PEER_S, request_body, socket_factory


def test_outgoing_sockets_detect_dead_peers() -> None:
    info = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0]
    with socket_factory(info) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert user_timeout == DEAD_PEER_S * 1000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) <= DEAD_PEER_S


def test_large_bodies_are_streamed_not_copied_at_once() -> None:
    assert request_body(b"x" * 10) == b"x" * 10
    big = request_body(b"x" * (2 << 20))
    assert isinstance(big, io.BytesIO) and len(big.getvalue()) == 2 << 20
