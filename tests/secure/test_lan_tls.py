"""The node's one port: TLS from the LAN (first byte 0x16), plain HTTP only for loopback.

A real aiohttp server behind ``GuardedSite`` on loopback, with ``trusted`` saying no
address is loopback (so every client is treated as another machine), on asyncio's
loop and on uvloop's (the node uses uvloop when it is installed).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from quorum.netguard import GuardedSite
from quorum.secure import ClusterTLS, Identity, node_dns_name, peer_node_id
from tests.harness import timeout

TOKEN = "tok-" + "c" * 28
OTHER = "tok-" + "d" * 28
BIG = 4 * 1024 * 1024

Scenario = Callable[[Path], Awaitable[None]]
RUNNERS = {
    "asyncio": lambda coro: asyncio.run(coro),
    "uvloop": lambda coro: asyncio.Runner(loop_factory=uvloop.new_event_loop).run(coro),
}


def _tls(tmp_path: Path, name: str, token: str = TOKEN) -> ClusterTLS:
    return ClusterTLS(Identity.load_or_create(tmp_path / name), name, token, tmp_path / name)


async def _who(request: web.Request) -> web.Response:
    body = await request.read()
    transport = request.transport
    peer = peer_node_id(transport.get_extra_info("ssl_object")) if transport else None
    return web.Response(text=f"{peer or 'none'} {len(body)}")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * BIG)


async def _serve(server: ClusterTLS, plain_lan: bool = False) -> tuple[web.AppRunner, GuardedSite]:
    app = web.Application(client_max_size=BIG * 2)
    app.router.add_post("/who", _who)
    app.router.add_get("/big", _big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(
        runner,
        "127.0.0.1",
        0,
        head_timeout_s=timeout(2),
        trusted=lambda host: False,
        tls=server.server,
        plain_lan=plain_lan,
    )
    await site.start()
    return runner, site


async def _ask(
    port: int, request: bytes, context: ssl.SSLContext | None, hostname: str | None = None
) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=hostname if context else None
    )
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout(10))
    finally:
        writer.close()


def _post(body: bytes) -> bytes:
    head = (
        f"POST /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def members_are_peers_and_others_are_not(tmp_path: Path) -> None:
    a, b = _tls(tmp_path, "node-a"), _tls(tmp_path, "node-b")
    runner, site = await _serve(b)
    port = runner.addresses[0][1]
    try:
        answer = await _ask(port, _post(b"hello" * 200_000), a.client, node_dns_name("node-b"))
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"node-a 1000000"), answer[
            -80:
        ]
        # Many requests on one connection, and a big answer (write flow control).
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=a.client, server_hostname=node_dns_name("node-b")
        )
        for _ in range(3):
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(10))
            assert head.startswith(b"HTTP/1.1 200"), head
            assert len(await asyncio.wait_for(reader.readexactly(BIG), timeout(10))) == BIG
        writer.close()
        # TLS without a client certificate (an API-key client): answered, as no peer.
        anonymous = ssl.create_default_context(cadata=b.ca.cert_pem)
        answer = await _ask(port, _post(b"hi"), anonymous, node_dns_name("node-b"))
        assert answer.endswith(b"none 2"), answer
        # Another cluster's certificate: the handshake fails, nothing is answered.
        stranger = _tls(tmp_path, "evil", OTHER)
        stranger.client.check_hostname = False
        stranger.client.verify_mode = ssl.CERT_NONE  # it would talk to anyone
        with pytest.raises((ssl.SSLError, ConnectionError)):
            answer = await _ask(port, _post(b"hi"), stranger.client, node_dns_name("node-b"))
            assert answer == b""  # TLS 1.3: the refusal may come after the client's Finished
            raise ConnectionError("closed")
        # Plain HTTP from another machine: refused, saying why; nothing reaches a handler.
        answer = await _ask(port, _post(b"hi"), None)
        assert answer.startswith(b"HTTP/1.1 403") and b"tls_required" in answer, answer
        assert site.guard.plain_refused == 1
    finally:
        await runner.cleanup()


async def plain_lan_when_allowed(tmp_path: Path) -> None:
    runner, _ = await _serve(_tls(tmp_path, "node-b"), plain_lan=True)
    try:
        answer = await _ask(runner.addresses[0][1], _post(b"hi"), None)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"none 2"), answer
    finally:
        await runner.cleanup()


async def silent_and_half_handshakes_are_closed(tmp_path: Path) -> None:
    runner, site = await _serve(_tls(tmp_path, "node-b"))
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), timeout(10)) == b""  # no first byte
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01\x00\xff")  # a ClientHello that never comes whole
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout(10)) == b""
        writer.close()
        assert site.guard.timed_out >= 1
    finally:
        await runner.cleanup()


async def a_previous_token_only_while_configured(tmp_path: Path) -> None:
    old = _tls(tmp_path, "old-member", OTHER)  # a member that still has the previous token
    where = tmp_path / "rotated"
    rotated = ClusterTLS(Identity.load_or_create(where), "node-b", TOKEN, where, (OTHER,))
    runner, _ = await _serve(rotated)
    try:
        answer = await _ask(
            runner.addresses[0][1], _post(b"hi"), old.client, node_dns_name("node-b")
        )
        assert answer.endswith(b"old-member 2"), answer  # a peer, through the cross-signed CA
    finally:
        await runner.cleanup()
    done = _tls(tmp_path, "node-b", TOKEN)  # the previous token dropped from the config
    runner, _ = await _serve(done)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            answer = await _ask(
                runner.addresses[0][1], _post(b"hi"), old.client, node_dns_name("node-b")
            )
            assert answer == b""
            raise ConnectionError("closed")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("loop", sorted(RUNNERS))
@pytest.mark.parametrize(
    "scenario",
    [
        members_are_peers_and_others_are_not,
        plain_lan_when_allowed,
        silent_and_half_handshakes_are_closed,
        a_previous_token_only_while_configured,
    ],
)
def test_lan_tls(loop: str, scenario: Scenario, tmp_path: Path) -> None:
    RUNNERS[loop](scenario(tmp_path))
