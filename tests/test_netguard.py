"""The connection guard's pure part: where heads and bodies are in a byte stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quorum.netguard import is_trusted
from quorum.request_heads import HeadTracker, Phase

POST = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def phases(stream: bytes, cuts: list[int]) -> tuple[list[Phase], int]:
    tracker = HeadTracker()
    seen, starts, last = [], 0, 0
    for at in [*sorted(set(cuts)), len(stream)]:
        starts += tracker.feed(stream[last:at])
        seen.append(tracker.phase)
        last = at
    return seen, starts


@given(st.lists(st.integers(0, len(POST + GET + POST)), max_size=10))
def test_pipelined_requests_end_between_requests(cuts: list[int]) -> None:
    seen, starts = phases(POST + GET + POST, cuts)
    assert seen[-1] is Phase.IDLE
    assert 1 <= starts <= 3  # a piece with a head's first byte starts a deadline


def test_byte_by_byte_each_head_starts_its_deadline_once() -> None:
    stream = POST + GET + POST
    _, starts = phases(stream, list(range(len(stream))))
    assert starts == 3


def phase_of(tracker: HeadTracker) -> Phase:
    return tracker.phase


def test_a_head_without_its_end_stays_a_head() -> None:
    tracker = HeadTracker()
    assert tracker.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert phase_of(tracker) is Phase.HEAD
    assert not tracker.feed(b"X-Slow: 1\r\n")  # a drip is no new head: the deadline stands
    assert phase_of(tracker) is Phase.HEAD


def test_a_body_is_tracked_then_a_chunked_one_is_left_alone() -> None:
    tracker = HeadTracker()
    tracker.feed(POST[:-2])
    assert phase_of(tracker) is Phase.BODY
    tracker.feed(POST[-2:])
    assert phase_of(tracker) is Phase.IDLE
    tracker.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
    assert phase_of(tracker) is Phase.UNTRACKED


UPGRADE = (
    b"GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@given(st.binary(min_size=1, max_size=64), st.integers(0x80, 0x8F))
def test_frames_after_an_upgrade_are_never_a_head(frame: bytes, first: int) -> None:
    """A masked WebSocket frame (first byte: FIN and an opcode) after the upgrade: untracked,
    so no head deadline ever cuts the tunnel."""
    tracker = HeadTracker()
    tracker.feed(UPGRADE)
    assert phase_of(tracker) is Phase.IDLE
    assert not tracker.feed(bytes([first]) + frame)
    assert phase_of(tracker) is Phase.UNTRACKED


def test_a_refused_upgrade_then_a_slow_head_is_still_timed() -> None:
    """A client that asked to upgrade, was refused, and drips its next head is timed."""
    tracker = HeadTracker()
    tracker.feed(UPGRADE)
    assert tracker.feed(b"GET /healthz HTTP/1.1\r\n")
    assert phase_of(tracker) is Phase.HEAD
    tracker.feed(b"Host: x\r\n\r\n")
    assert phase_of(tracker) is Phase.IDLE
    assert tracker.feed(b"\x82\x85")  # no upgrade asked this time: a head, timed
    assert phase_of(tracker) is Phase.HEAD


def test_only_loopback_is_trusted() -> None:
    assert is_trusted("127.0.0.1") and is_trusted("::1")
    assert not is_trusted("10.213.0.2") and not is_trusted(None) and not is_trusted("x")


async def test_a_long_answer_is_not_cut_by_the_head_deadline() -> None:
    """A whole request in one packet, then a silent minute while it is answered: the
    connection stays (only an unfinished head or a stalled body is timed)."""
    import asyncio

    from aiohttp import web

    from quorum.netguard import GuardedSite

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, head_timeout_s=0.2, body_idle_s=0.2)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"done")
        writer.close()
        # A head that never ends is still closed at its deadline.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert site.guard.timed_out == 1
    finally:
        await runner.cleanup()


def test_tls_runs_on_uvloops_compiled_protocol_on_uvloop() -> None:
    import asyncio.sslproto

    import uvloop
    import uvloop.loop

    from quorum.netguard import _ssl_protocol

    loop = uvloop.new_event_loop()
    try:
        assert _ssl_protocol(loop) is uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    finally:
        loop.close()
    plain = asyncio.new_event_loop()
    try:
        assert _ssl_protocol(plain) is asyncio.sslproto.SSLProtocol
    finally:
        plain.close()
