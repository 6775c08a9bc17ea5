"""A real ``TunnelClient`` joined to a real relay ``Hub`` in memory: requests, credit,
resets, reconnects, the relay's own streams, newest-wins and drain."""

from __future__ import annotations

import asyncio
import json

import pytest

from quorum.errors import NoReachableHolder, StreamRefused, UpstreamFailed
from quorum.fleet import PeerGone
from quorum.link import EndReason, Pump, TunnelStream
from quorum.protocol import (
    STREAM_WINDOW_BASE,
    Connection,
    Event,
    GoAwayReason,
    GoAwayReceived,
    Limits,
    ModelInfo,
    RequestHead,
    ResetCode,
    ResponseHead,
    Role,
)
from quorum.tunnel import StreamHandler
from relay.hub import Hub
from tests.harness import timeout
from tests.link.helpers import read_all, until
from tests.tunnel.helpers import CLUSTER, MemoryRelay, Node, running

QWEN = (ModelInfo("qwen3", "llm"),)
SSE = ResponseHead(200, (("Content-Type", "text/event-stream"),))
EVENTS = [f'data: {{"n": {i}}}\n\n'.encode() for i in range(5)] + [b"data: [DONE]\n\n"]
BODY = json.dumps({"model": "qwen3", "stream": True}).encode()


async def answer_sse(head: RequestHead, stream: TunnelStream) -> None:
    """What a serving node does: read the request, stream an SSE answer."""
    assert json.loads(await read_all(stream)) == {"model": "qwen3", "stream": True}
    stream.send_response(SSE)
    for event in EVENTS:
        await stream.send_all(event)
    await stream.send_eof()


async def ask(node: Node, target: str, body: bytes = BODY) -> tuple[int, bytes]:
    response = await node.client.request(
        target, "POST", "/v1/chat/completions", [("Content-Type", "application/json")], body, 5
    )
    try:
        return response.status, b"".join([c async for c in response.chunks()])
    finally:
        response.release()


async def test_a_request_and_its_streamed_answer_through_the_hub() -> None:
    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=answer_sse, models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        status, body = await ask(a, "node-b")
        assert status == 200 and body == b"".join(EVENTS)
        assert relay.hub.streams_piped == 1
        await until(lambda: relay.hub.open_streams == 0)
        assert relay.hub.buffered_bytes == 0
        assert a.client.status.connected and a.client.status.peers == 1
    await relay.close()


async def test_a_frozen_reader_holds_one_window_at_the_relay() -> None:
    # Windows that do not grow: the bound is then exactly one window per direction.
    fixed = Limits(max_window=STREAM_WINDOW_BASE)
    relay = MemoryRelay(Hub(limits=Limits(max_streams=512, max_window=STREAM_WINDOW_BASE)))
    total = 8 * STREAM_WINDOW_BASE
    sent = 0

    async def answer_big(head: RequestHead, stream: TunnelStream) -> None:
        nonlocal sent
        await read_all(stream)
        stream.send_response(ResponseHead(200, (("Content-Type", "audio/wav"),)))
        while sent < total:
            await stream.send_all(bytes(16 * 1024))
            sent += 16 * 1024
        await stream.send_eof()

    a = Node(relay, "node-a", limits=fixed)
    b = Node(relay, "node-b", serve=answer_big, models=QWEN, limits=fixed)
    async with running(a, b):
        await a.until_knows("node-b")
        response = await a.client.request("node-b", "POST", "/v1/audio/speech", [], BODY, 5)
        # A reads nothing: A holds one window, the relay one more, B waits for credit.
        await until(lambda: relay.hub.buffered_bytes == STREAM_WINDOW_BASE)
        for _ in range(200):
            await asyncio.sleep(0)
        assert relay.hub.buffered_bytes == STREAM_WINDOW_BASE
        assert sent <= 2 * STREAM_WINDOW_BASE + 16 * 1024 and sent < total
        # Reading lets everything through.
        got = 0
        async for chunk in response.chunks():
            got += len(chunk)
        assert got == total == sent
        await until(lambda: relay.hub.open_streams == 0 and relay.hub.buffered_bytes == 0)
    await relay.close()


async def test_a_client_going_away_stops_the_serving_nodes_work() -> None:
    started, stopped, go_on = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(head: RequestHead, stream: TunnelStream) -> None:
        await read_all(stream)
        stream.send_response(SSE)
        await stream.send_all(EVENTS[0])
        started.set()
        try:
            await go_on.wait()  # an engine still generating
        finally:
            stopped.set()

    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=slow, models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        response = await a.client.request("node-b", "POST", "/v1/chat/completions", [], BODY, 5)
        async with asyncio.timeout(timeout(5)):
            await started.wait()
            response.release()  # the app hung up
            await stopped.wait()  # B's handler was cancelled
        assert not go_on.is_set()
        await until(lambda: relay.hub.open_streams == 0)
    await relay.close()


async def test_a_failing_handler_fails_the_request_before_its_answer() -> None:
    async def broken(head: RequestHead, stream: TunnelStream) -> None:
        raise RuntimeError("the engine is on fire")

    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=broken, models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        with pytest.raises(UpstreamFailed, match="serving failed: RuntimeError") as info:
            await ask(a, "node-b")
        assert info.value.status == 502
    await relay.close()


async def test_a_refused_stream_is_tried_again() -> None:
    calls = 0

    async def refuse_once(head: RequestHead, stream: TunnelStream) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            stream.reset(ResetCode.REFUSED, "busy")
            return
        await answer_sse(head, stream)

    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=refuse_once, models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        assert await ask(a, "node-b") == (200, b"".join(EVENTS))
        assert calls == 2
    await relay.close()


async def test_an_unknown_node_is_no_route() -> None:
    relay = MemoryRelay()
    a = Node(relay, "node-a")
    async with running(a):
        await until(lambda: a.client.status.connected)
        with pytest.raises(NoReachableHolder, match="node-x is not connected") as info:
            await ask(a, "node-x")
        assert not isinstance(info.value, StreamRefused)
    await relay.close()


def answer_after(gate: asyncio.Event) -> StreamHandler:
    """A handler that sends the first event, then the rest once ``gate`` is set."""

    async def held(head: RequestHead, stream: TunnelStream) -> None:
        await read_all(stream)
        stream.send_response(SSE)
        await stream.send_all(EVENTS[0])
        await gate.wait()
        for event in EVENTS[1:]:
            await stream.send_all(event)
        await stream.send_eof()

    return held


async def test_the_node_reconnects_after_the_relay_drops_it() -> None:
    gate = asyncio.Event()
    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=answer_after(gate), models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        response = await a.client.request("node-b", "POST", "/v1/chat/completions", [], BODY, 5)
        chunks = response.chunks()
        assert await anext(chunks) == EVENTS[0]
        relay.links[0].close()  # A's tunnel drops mid-answer
        async with asyncio.timeout(timeout(2)):
            with pytest.raises(UpstreamFailed, match="cut off"):
                await anext(chunks)
        # A forgot B (it may come back through the new tunnel), and dialled again.
        await until(lambda: any(isinstance(e, PeerGone) and e.node_id == "node-b" for e in a.fleet))
        await until(lambda: relay.dials == 3 and a.client.status.connected)
        await a.until_knows("node-b")
        gate.set()
        assert await ask(a, "node-b") == (200, b"".join(EVENTS))
    await relay.close()


async def test_a_silent_relay_is_left_and_reached_again(caplog: pytest.LogCaptureFixture) -> None:
    relay = MemoryRelay(Hub(ping_interval=0.05))
    a = Node(relay, "node-a", ping_interval=0.05)
    async with running(a):
        await until(lambda: a.client.status.connected)
        relay.links[0].silence()
        await until(lambda: relay.dials == 2 and a.client.status.connected, seconds=2)
    assert "the relay stopped answering for 0.125 s; reconnecting" in caplog.text
    await relay.close()


async def test_a_refused_token_stops_reconnecting() -> None:
    relay = MemoryRelay()
    relay.refuse = True
    a = Node(relay, "node-a")
    async with asyncio.timeout(timeout(5)):
        await a.client.run()  # returns by itself
    assert a.client.status.stopped and "401" in (a.client.status.last_error or "")
    assert relay.dials == 1


async def test_an_unreachable_relay_is_tried_again_until_it_answers() -> None:
    relay = MemoryRelay()
    relay.down = True
    a = Node(relay, "node-a")
    async with running(a):
        await until(lambda: relay.dials >= 3)
        assert "nothing listens" in (a.client.status.last_error or "")
        relay.down = False
        await until(lambda: a.client.status.connected)
    await relay.close()


async def test_the_relays_own_stream_reaches_a_node() -> None:
    relay = MemoryRelay()
    b = Node(relay, "node-b", serve=answer_sse, models=QWEN)
    async with running(b):
        await until(lambda: relay.hub.link(CLUSTER, "node-b") is not None)
        link = relay.hub.link(CLUSTER, "node-b")
        assert link is not None
        head = RequestHead("POST", "/v1/chat/completions", (), model="qwen3")
        stream = relay.hub.open_local(link, head, end_stream=False)
        await stream.send_body(BODY)
        async with asyncio.timeout(timeout(5)):
            assert (await stream.response).status == 200
            assert b"".join([c async for c in stream.body()]) == b"".join(EVENTS)
        assert relay.hub.streams_served == 1
        await until(lambda: relay.hub.open_streams == 0)
    await relay.close()


async def test_the_newest_connection_of_a_node_wins() -> None:
    relay = MemoryRelay()
    heard: list[Event] = []
    pumps = []
    for n in range(2):
        conn = Connection(Role.NODE)
        conn.send_hello("twin")
        transport = await relay.dial()
        pumps.append(
            Pump(conn, transport, on_event=heard.append) if n == 0 else Pump(conn, transport)
        )
    runs = [asyncio.create_task(p.run()) for p in pumps]
    async with asyncio.timeout(timeout(5)):
        ended = await runs[0]  # the relay closes the replaced one
    assert [e.goaway.reason for e in heard if isinstance(e, GoAwayReceived)] == [
        GoAwayReason.REPLACED
    ]
    assert ended.reason is EndReason.CLOSED
    link = relay.hub.link(CLUSTER, "twin")
    assert link is not None and link.pump.ended is None and not runs[1].done()
    await pumps[1].close()
    await relay.close()


async def test_drain_refuses_new_streams_and_lets_running_ones_finish() -> None:
    gate = asyncio.Event()
    relay = MemoryRelay()
    a, b = Node(relay, "node-a"), Node(relay, "node-b", serve=answer_after(gate), models=QWEN)
    async with running(a, b):
        await a.until_knows("node-b")
        response = await a.client.request("node-b", "POST", "/v1/chat/completions", [], BODY, 5)
        drain = asyncio.create_task(relay.hub.drain(timeout(10)))
        await until(lambda: relay.hub.draining)
        with pytest.raises(NoReachableHolder):  # refused by the GOAWAY, or by the hub
            await ask(a, "node-b")
        assert not drain.done()
        gate.set()
        assert b"".join([c async for c in response.chunks()]) == b"".join(EVENTS)
        async with asyncio.timeout(timeout(5)):
            await drain
        assert relay.hub.open_streams == 0
    await relay.close()
