"""Faults around the relay: each fails only what it must, visibly, and heals by itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from quorum.protocol import (
    STREAM_WINDOW_BASE,
    DataReceived,
    GoAwayReason,
    GoAwayReceived,
    RequestHead,
    ResetCode,
    StreamReset,
)
from tests.fakes import FakeTTS, LoopThread
from tests.harness import timeout
from tests.relay.harness import RawNode, Relay, create_cluster
from tests.relay.test_relay_e2e import MODEL, holders, status, wait_until


class Trio:
    """Relay + node A (engine) + node B (none), rebuilt for every test."""

    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        from tests.relay.test_relay_e2e import Pair

        self.bg = bg
        self.pair = Pair(bg, tmp)
        self.a, self.b, self.relay = self.pair.a, self.pair.b, self.pair.relay
        self.vllm = self.pair.vllm
        wait_until(lambda: bool(holders(self.b, MODEL)), 10, "A's model at B")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
        )

    def a_id(self) -> str:
        return str(status(self.a)["node"]["id"])


@pytest.fixture
def trio(bg: LoopThread, tmp_path: Path) -> Iterator[Trio]:
    t = Trio(bg, tmp_path)
    try:
        yield t
    finally:
        t.pair.close()


def stream_until_failure(trio: Trio, on_first_chunk: object) -> tuple[str, float, float]:
    """Read a slow stream at B; call ``on_first_chunk`` once; return (text, t_action, t_error)."""
    trio.vllm.chunks, trio.vllm.chunk_delay = 60, 0.1
    text, acted, failed = "", 0.0, 0.0
    with trio.client() as c:
        stream = c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": " ".join(["w"] * 60)}],
            stream=True,
        )
        with stream, pytest.raises(openai.APIError) as info:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                    if not acted:
                        acted = time.monotonic()
                        on_first_chunk()  # type: ignore[operator]
        failed = time.monotonic()
    assert "cut off" in str(info.value) or "stopped" in str(info.value)
    return text, acted, failed


def test_killing_the_relay_fails_streams_at_once_and_nodes_come_back(trio: Trio) -> None:
    text, killed, failed = stream_until_failure(trio, trio.relay.kill)
    assert text and not text.endswith("w" * 3)  # a visibly incomplete answer
    assert failed - killed < timeout(5)  # not a hang (DESIGN: within 1 s; see bench)
    # The serving node noticed too, and stopped its engine's generation.
    wait_until(trio.vllm.cancelled.is_set, 5, "the engine saw the cancel")
    assert status(trio.b)["relay"]["connected"] is False
    # The relay comes back on the same address; the nodes reconnect by themselves.
    trio.relay = Relay(trio.relay.data, trio.relay.port).start()
    trio.pair.relay = trio.relay
    wait_until(lambda: status(trio.b)["relay"]["connected"], 15, "B reconnected")
    wait_until(lambda: bool(holders(trio.b, MODEL)), 15, "A's model back at B")
    trio.vllm.chunks, trio.vllm.chunk_delay = 4, 0.0
    with trio.client() as c:
        done = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "You said: hi"


DEAD_AFTER_S = 25.0  # DESIGN: a tunnel peer silent for ~25 s is dead


def test_a_frozen_relay_fails_streams_within_liveness_and_heals(trio: Trio) -> None:
    """SIGSTOP the relay mid-stream (its kernel still accepts and acknowledges): the tunnel
    goes silent, the nodes call it dead after ~25 s and fail the stream visibly at once; a new
    request is then a 503, not a hang; after SIGCONT everything reconnects by itself."""
    relay = trio.relay
    assert relay.proc is not None
    pid = relay.proc.pid
    try:
        text, frozen, failed = stream_until_failure(trio, lambda: os.kill(pid, signal.SIGSTOP))
        assert text and not text.endswith("w" * 3)  # a visibly incomplete answer
        took = failed - frozen
        assert took < timeout(DEAD_AFTER_S + 5), took  # liveness, not a TCP timeout
        wait_until(lambda: status(trio.b)["relay"]["connected"] is False, 5, "B saw it dead")
        started = time.monotonic()
        with trio.client() as c, pytest.raises(openai.InternalServerError) as gone:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert gone.value.status_code == 503
        assert time.monotonic() - started < timeout(5)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"frozen relay: the stream failed {took:.1f} s after SIGSTOP")
    wait_until(lambda: status(trio.b)["relay"]["connected"], 40, "B reconnected")
    wait_until(lambda: bool(holders(trio.b, MODEL)), 20, "A's model back at B")
    trio.vllm.chunks, trio.vllm.chunk_delay = 4, 0.0
    with trio.client() as c:
        done = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "You said: hi"
    assert relay.proc.poll() is None  # the same relay process, never restarted


def test_killing_the_serving_node_ends_the_stream_with_an_error(trio: Trio) -> None:
    def stop_a() -> None:
        threading.Thread(target=lambda: trio.bg.run(trio.a.stop()), daemon=True).start()

    text, _, _ = stream_until_failure(trio, stop_a)
    assert text
    wait_until(lambda: not holders(trio.b, MODEL), 5, "A's model gone from B")
    # Gone moments ago: "try again" (503 with Retry-After), not "no such model" (404).
    with trio.client() as c, pytest.raises(openai.InternalServerError) as gone:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert gone.value.status_code == 503
    assert int(gone.value.response.headers["Retry-After"]) >= 1


def test_another_cluster_can_neither_see_nor_reach(trio: Trio, bg: LoopThread) -> None:
    other_token = create_cluster(trio.relay.data, "elsewhere")
    spy = trio.pair.node("spy", [], token=other_token)
    try:
        wait_until(lambda: status(spy)["relay"]["connected"], 10, "spy connected")
        assert holders(spy, MODEL) == []
        assert [p for p in status(spy)["models"]] == []

        async def probe() -> list[object]:
            async with RawNode(trio.relay.url, other_token, "raw-spy") as raw:
                await raw.events(0.3)  # hello, presences of its own cluster (none)
                raw.conn.open_stream(
                    RequestHead("POST", "/v1/chat/completions", (), node=trio.a_id())
                )
                await raw.flush()
                return await raw.events(1)

        events = asyncio.run(probe())
        resets = [e for e in events if isinstance(e, StreamReset)]
        assert [r.code for r in resets] == [ResetCode.NO_ROUTE]
    finally:
        bg.run(spy.stop())


def test_garbage_closes_only_the_offending_connection(trio: Trio) -> None:
    async def garbage() -> bool:
        async with RawNode(trio.relay.url, trio.pair.token, "vandal") as raw:
            await raw.ws.send(b"\x01\xff\x00\x00\x00\x00\x07not a frame")
            try:
                async with asyncio.timeout(timeout(5)):
                    while True:
                        await raw.ws.recv()
            except Exception:
                return True

    assert asyncio.run(garbage())
    with trio.client() as c:
        done = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "ok"}])
    assert done.choices[0].message.content == "You said: ok"
    assert status(trio.a)["relay"]["connected"] and status(trio.b)["relay"]["connected"]


def relay_metric(relay: Relay, name: str) -> float:
    with urllib.request.urlopen(relay.http + "/metrics", timeout=timeout(5)) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_frozen_reader_holds_one_window_and_slows_nobody(trio: Trio, bg: LoopThread) -> None:
    tts = FakeTTS(pieces=400)
    url = bg.run(tts.start())
    a2 = trio.pair.node("node-c", [{"name": "tts", "url": url, "type": "tts"}])
    try:
        wait_until(lambda: bool(holders(trio.b, "tts-1")), 10, "C's tts at B")
        c_id = str(status(a2)["node"]["id"])
        text = "x" * 60_000  # a speech answer of ~1 MB: several windows' worth of bytes

        async def freeze() -> tuple[float, float]:
            async with RawNode(trio.relay.url, trio.pair.token, "frozen") as raw:
                await raw.events(0.3)
                body = json.dumps({"model": "tts-1", "input": text, "voice": "alloy"}).encode()
                sid = raw.conn.open_stream(
                    RequestHead(
                        "POST",
                        "/v1/audio/speech",
                        (("Content-Type", "application/json"),),
                        node=c_id,
                    )
                )
                raw.conn.send_data(sid, body)
                raw.conn.end_stream(sid)
                await raw.flush()
                # Read frames but never consume: no credit ever goes back.
                got = await raw.events(3)
                received = sum(len(e.data) for e in got if isinstance(e, DataReceived))
                assert received <= STREAM_WINDOW_BASE  # the relay sent exactly what we granted
                held = relay_metric(trio.relay, "quorum_relay_buffered_bytes")
                # Another stream through the same relay is not slowed down.
                started = time.monotonic()
                await asyncio.to_thread(other_request)
                return held, time.monotonic() - started

        def other_request() -> None:
            with trio.client() as c:
                done = c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "not blocked"}]
                )
            assert done.choices[0].message.content == "You said: not blocked"

        held, took = asyncio.run(freeze())
        # The relay holds at most the one window the serving node may send ahead.
        assert 0 < held <= STREAM_WINDOW_BASE
        assert took < timeout(5)
    finally:
        bg.run(a2.stop())
        bg.run(tts.stop())


def test_sigterm_drains_running_streams(trio: Trio) -> None:
    trio.vllm.chunks, trio.vllm.chunk_delay = 10, 0.1
    code: list[int] = []
    with trio.client() as c:
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": " ".join(["d"] * 10)}], stream=True
        )
        text = ""
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not text:
                        assert trio.relay.proc is not None
                        trio.relay.proc.send_signal(signal.SIGTERM)
                        threading.Thread(target=lambda: code.append(trio.relay.stop())).start()
                    text += chunk.choices[0].delta.content
    assert text == "You said: " + " ".join(["d"] * 10)  # the running stream finished whole
    wait_until(lambda: bool(code), 20, "the relay exited")
    assert code == [0]


def test_oversized_frame_closes_only_that_connection(trio: Trio) -> None:
    async def oversized() -> bool:
        async with RawNode(trio.relay.url, trio.pair.token, "too-big") as raw:
            await raw.ws.send(b"\x01\x12\x00\x00\x00\x00\x01" + b"\0" * (70 * 1024))
            try:
                async with asyncio.timeout(timeout(5)):
                    while True:
                        await raw.ws.recv()
            except Exception:
                return True

    assert asyncio.run(oversized())
    with trio.client() as c:
        done = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "ok"}])
    assert done.choices[0].message.content == "You said: ok"


def test_newest_connection_of_a_node_wins(trio: Trio) -> None:
    async def twice() -> list[object]:
        async with RawNode(trio.relay.url, trio.pair.token, "twin") as first:
            await first.events(0.3)
            async with RawNode(trio.relay.url, trio.pair.token, "twin") as second:
                await second.events(0.3)
                return await first.events(2)

    events = asyncio.run(twice())
    goaways = [e for e in events if isinstance(e, GoAwayReceived)]
    assert [g.goaway.reason for g in goaways] == [GoAwayReason.REPLACED]


def test_clients_that_leave_early_leave_no_stream_behind(trio: Trio) -> None:
    """Every stream of a client that went away mid-answer is forgotten by the relay; so a
    drain after them does not wait for streams that no longer exist."""
    trio.vllm.chunks, trio.vllm.chunk_delay = 60, 0.05
    for _ in range(40):
        with trio.client() as c:
            stream = c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "w w w"}], stream=True
            )
            with stream:
                next(iter(stream))  # the first chunk, then the client leaves
    wait_until(lambda: relay_metric(trio.relay, "quorum_relay_streams") == 0, 10, "no stream left")
    assert relay_metric(trio.relay, "quorum_relay_streams_piped") >= 40
    started = time.monotonic()
    assert trio.relay.stop() == 0
    assert time.monotonic() - started < timeout(4)  # nothing left to drain for (5 s at most)


def relay_rss_mib(relay: Relay) -> float:
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


BUFFERS = ("tcp_rmem", "tcp_wmem")
FRAME = 6 + 65536


def test_after_a_protocol_error_the_relay_reads_no_more(trio: Trio) -> None:
    """A broken frame, then 4,000 frames of 64 KiB: the relay closes the connection at the first
    and never queues the rest (its memory stays where it was)."""
    before = relay_rss_mib(trio.relay)

    async def flood() -> int:
        sent = 0
        async with RawNode(trio.relay.url, trio.pair.token, "vandal") as raw:
            await raw.ws.send(b"\x01\xff\x00\x00\x00\x00\x07not a frame")
            try:
                for _ in range(4000):
                    await raw.ws.send(b"\x01\x02\x00\x00\x00\x01" + b"x" * 65536)
                    sent += 1
            except Exception:
                pass  # closed by the relay, as it should
        return sent

    sent = asyncio.run(flood())
    # Only what the kernel's socket buffers take gets through (the relay's receive buffer and
    # our send buffer at their largest, plus a few frames in the libraries), never the rest.
    buffered = sum(int(Path(f"/proc/sys/net/ipv4/{n}").read_text().split()[2]) for n in BUFFERS)
    most = 2 * buffered // FRAME + 128  # (the libraries' own buffers, under load, too)
    assert sent < most, f"the relay read on after a protocol error: {sent} frames of 64 KiB"
    assert relay_rss_mib(trio.relay) - before < 32
    with trio.client() as c:
        done = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "ok"}])
    assert done.choices[0].message.content == "You said: ok"
