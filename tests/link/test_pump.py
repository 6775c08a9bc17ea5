"""The pump: liveness, the ways a connection ends, and the writer's order."""

from __future__ import annotations

import asyncio

import pytest

from quorum.errors import NoReachableHolder, StreamBroken, UpstreamFailed
from quorum.link import Ended, EndReason, Keepalive, Pump
from quorum.protocol import (
    STREAM_WINDOW_BASE,
    Connection,
    FrameType,
    ModelInfo,
    Presence,
    ResponseHead,
    Role,
)
from tests.harness import timeout
from tests.link.helpers import HEAD, MemoryLink, running_pair, until

OK = ResponseHead(200, (("content-type", "text/event-stream"),))
QUICK = Keepalive(interval=0.05, dead_after=0.25, jitter=0.2)


def count(frames: list[bytes], kind: FrameType) -> int:
    return sum(1 for f in frames if f[1] == kind)


async def test_a_silent_peer_fails_every_stream_within_the_deadline() -> None:
    async with running_pair(keepalive=QUICK) as pair:
        waiting = pair.node.open_stream(HEAD, end_stream=True)
        answered = pair.node.open_stream(HEAD, end_stream=True)
        first, second = await pair.accepted(), await pair.accepted()
        second.send_response(OK)
        await second.send_all(b"data: 1\n\n")
        await answered.response()
        assert await answered.receive_some() == b"data: 1\n\n"

        loop = asyncio.get_running_loop()
        silenced = loop.time()
        pair.link.silence()  # both sockets stay open; nothing gets through
        async with asyncio.timeout(QUICK.dead_after + timeout(1)):
            with pytest.raises(NoReachableHolder, match="stopped answering") as before:
                await waiting.response()
            with pytest.raises(StreamBroken, match="cut off") as after:
                await answered.receive_some()
        took = loop.time() - silenced
        # Dead only after the silence lasted (minus the last ping's head start), at once then.
        assert QUICK.dead_after - 2 * QUICK.interval <= took <= QUICK.dead_after + 1.0
        assert before.value.status == 503 and after.value.status == 502
        assert pair.node_run is not None and pair.relay_run is not None
        async with asyncio.timeout(timeout(2)):
            ended = await pair.node_run
            assert ended == Ended(EndReason.SILENT, "the relay stopped answering for 0.25 s")
            assert (await pair.relay_run).reason is EndReason.SILENT
        # The relay's side failed the same streams.
        for stream in (first, second):
            with pytest.raises(StreamBroken):
                await stream.receive_some()


async def test_pings_keep_a_quiet_connection_alive() -> None:
    async with running_pair(keepalive=QUICK) as pair:
        sent = pair.link.node.sent
        # Eight pings each way take about 0.4 s, well past dead_after of silence otherwise.
        await until(lambda: count(sent, FrameType.PING) >= 8, seconds=5)
        assert count(pair.link.relay.sent, FrameType.PONG) >= 7
        assert pair.node.ended is None and pair.relay.ended is None
        out = pair.node.open_stream(HEAD, end_stream=True)
        (await pair.accepted()).send_response(OK, end_stream=True)
        assert (await out.response()).status == 200


async def test_a_closed_transport_fails_every_stream_at_once() -> None:
    async with running_pair() as pair:
        waiting = pair.node.open_stream(HEAD, end_stream=True)
        inc = await pair.accepted()
        pair.link.close()
        async with asyncio.timeout(timeout(1)):
            with pytest.raises(NoReachableHolder, match="could not be reached"):
                await waiting.response()
            with pytest.raises(StreamBroken):
                await inc.receive_some()
        assert pair.node_run is not None
        assert (await pair.node_run).reason is EndReason.CLOSED
        assert pair.node.active_streams == 0 and not pair.node.can_open_stream()
        with pytest.raises(Exception, match="takes no new requests"):
            pair.node.open_stream(HEAD)


async def test_a_protocol_error_fails_the_streams_and_says_goodbye() -> None:
    async with running_pair() as pair:
        waiting = pair.node.open_stream(HEAD, end_stream=True)
        await pair.accepted()
        pair.link.node.inbox.put_nowait(b"\x01\x7f\x00\x00\x00\x00\x00garbage")  # unknown type
        async with asyncio.timeout(timeout(2)):
            with pytest.raises(UpstreamFailed, match="broke the tunnel protocol"):
                await waiting.response()
            assert pair.node_run is not None
            assert (await pair.node_run).reason is EndReason.PROTOCOL_ERROR
        assert count(pair.link.node.sent, FrameType.GOAWAY) == 1  # GOAWAY(PROTOCOL_ERROR)


async def test_close_ends_the_connection_and_its_streams() -> None:
    async with running_pair() as pair:
        waiting = pair.node.open_stream(HEAD, end_stream=True)
        await pair.accepted()
        async with asyncio.timeout(timeout(2)):
            await pair.relay.close("the relay is restarting")
            assert pair.relay.ended == Ended(EndReason.STOPPED, "the relay is restarting")
            with pytest.raises(NoReachableHolder):  # the node saw the transport close
                await waiting.response()


async def test_control_frames_overtake_data_waiting_for_the_socket() -> None:
    async with running_pair() as pair:
        out = pair.node.open_stream(HEAD)
        await pair.accepted()
        sent = pair.link.node.sent
        before = len(sent)
        gate = pair.link.node.gate = asyncio.Semaphore(0)
        await out.send_all(bytes(STREAM_WINDOW_BASE))  # four 64 KiB DATA frames, all held
        await until(lambda: pair.link.node.held == 1)  # the writer waits with the first
        pair.node.send_presence(Presence("studio", (ModelInfo("qwen3", "llm"),), True, 0))
        for n in range(1, 6):
            gate.release()
            await until(lambda n=n: len(sent) == before + n)  # type: ignore[misc]
        kinds = [FrameType(f[1]) for f in sent[before:]]
        assert kinds == [
            FrameType.DATA,
            FrameType.PRESENCE,  # queued after all four DATA, sent before three of them
            FrameType.DATA,
            FrameType.DATA,
            FrameType.DATA,
        ]


async def test_nothing_overtakes_the_request_that_opens_a_stream() -> None:
    async with running_pair() as pair:
        busy = pair.node.open_stream(HEAD)
        await pair.accepted()
        sent = pair.link.node.sent
        before = len(sent)
        gate = pair.link.node.gate = asyncio.Semaphore(0)
        await busy.send_all(bytes(STREAM_WINDOW_BASE))  # four DATA frames, held
        await until(lambda: pair.link.node.held == 1)
        out = pair.node.open_stream(HEAD)  # its REQUEST waits behind the DATA
        out.reset()  # so must its RESET: before the REQUEST, the id would be unknown
        for n in range(1, 7):
            gate.release()
            await until(lambda n=n: len(sent) == before + n)  # type: ignore[misc]
        kinds = [FrameType(f[1]) for f in sent[before:]]
        assert kinds == [FrameType.DATA] * 4 + [FrameType.REQUEST, FrameType.RESET]
        pair.link.node.gate = None
        # The relay took both without a protocol error; the connection still works.
        reset = await pair.accepted()
        assert reset.id == out.id
        later = pair.node.open_stream(HEAD, end_stream=True)
        (await pair.accepted()).send_response(OK, end_stream=True)
        assert (await later.response()).status == 200
        assert pair.relay.ended is None and pair.node.ended is None


async def test_a_pump_runs_once() -> None:
    conn = Connection(Role.NODE)
    conn.send_hello("studio")
    pump = Pump(conn, MemoryLink().node)
    await pump.close()  # before run: run returns at once
    assert (await pump.run()).reason is EndReason.STOPPED
    with pytest.raises(RuntimeError):
        await pump.run()
