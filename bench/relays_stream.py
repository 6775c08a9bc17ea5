"""A stream through one relay against the same stream through two (``bench.relays``).

Fake nodes in this process on real WebSocket tunnels (``quorum.tunnel.dial`` and
``quorum.link.Pump``, the node's own stack minus HTTP and engines) to relay
processes: A (answers at once) and BIG (answers ``stream_chunks`` chunks of 64 KiB)
on relay 1; B-near on relay 1 and B-far on relay 2. B-near to A is the single-relay
route; B-far to A crosses relay 2, NATS and relay 1. Latency rounds alternate between
the two routes at concurrency 1; the large answer alternates too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.procs import BenchError
from quorum.errors import ApiError
from quorum.link import Pump, TunnelStream
from quorum.protocol import (
    Connection,
    Limits,
    ModelInfo,
    Presence,
    PresenceReceived,
    RequestHead,
    ResponseHead,
    Role,
)
from quorum.tunnel.dial import dial_relay

CHUNK = 65536
Serve = Callable[[TunnelStream], Coroutine[Any, Any, None]]
Progress = Callable[[str], None]


class FakeNode:
    """A node's tunnel without HTTP: says hello and its models, serves streams with ``serve``."""

    def __init__(self, node_id: str, serve: Serve, models: tuple[str, ...]) -> None:
        self.node_id = node_id
        self.serve = serve
        self.models = models
        self.heard: set[str] = set()
        self.pump: Pump | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self, url: str, token: str) -> FakeNode:
        transport = await dial_relay(url, token)
        conn = Connection(Role.NODE, Limits(max_streams=512, max_opens_per_second=100_000.0))
        conn.send_hello(self.node_id, capabilities=("presence", "streams"))
        models = tuple(ModelInfo(m) for m in self.models)
        conn.send_presence(Presence(self.node_id, models, True, 0, self.node_id))
        self.pump = Pump(
            conn, transport, on_event=self._event, on_stream=self._stream, name=self.node_id
        )
        self._spawn(self.pump.run())
        return self

    def _event(self, event: object) -> None:
        if isinstance(event, PresenceReceived) and event.presence.online:
            self.heard.add(event.presence.node_id)

    def _stream(self, stream: TunnelStream) -> None:
        self._spawn(self.serve(stream))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def request(self, target: str) -> int:
        """One request to ``target``; the answer's size."""
        assert self.pump is not None
        head = RequestHead("POST", "/v1/chat/completions", (), node=target)
        stream = self.pump.open_stream(head, end_stream=False)
        await stream.send_all(b'{"model":"m","messages":[]}')
        await stream.send_eof()
        answer = await stream.response()
        if answer.status != 200:
            raise BenchError(f"{self.node_id} -> {target}: status {answer.status}")
        return await drain(stream)

    async def stop(self) -> None:
        if self.pump is not None:
            await self.pump.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def drain(stream: TunnelStream) -> int:
    total = 0
    while chunk := await stream.receive_some():
        total += len(chunk)
    return total


def answering(chunks: int) -> Serve:
    async def serve(stream: TunnelStream) -> None:
        await drain(stream)
        stream.send_response(ResponseHead(200, (("Content-Type", "application/json"),)))
        if chunks:
            chunk = b"x" * CHUNK
            for _ in range(chunks):
                await stream.send_all(chunk)
        else:
            await stream.send_all(b'{"choices":[{"message":{"content":"ok"}}]}')
        await stream.send_eof()

    return serve


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {seconds:g} s")
        await asyncio.sleep(0.02)


async def _reachable(node: FakeNode, target: str, seconds: float) -> None:
    """Until a request to ``target`` succeeds (the relays' own connection may be starting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await node.request(target)
            return
        except ApiError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"{node.node_id} cannot reach {target}: {exc}") from None
            await asyncio.sleep(0.05)


async def measure(
    urls: list[str],
    token: str,
    *,
    rounds: int,
    requests: int,
    stream_chunks: int,
    stream_repeats: int,
    progress: Progress,
    cpu: Callable[[], dict[str, float]],
) -> dict[str, Any]:
    """``cpu``: CPU seconds so far of each process that takes part (for where a large
    answer's time goes)."""
    a = FakeNode("a", answering(0), ("m",))
    big = FakeNode("big", answering(stream_chunks), ("big",))
    near = FakeNode("b-near", answering(0), ())
    far = FakeNode("b-far", answering(0), ())
    nodes = [a, big, near, far]
    try:
        for node, url in zip(nodes, (urls[0], urls[0], urls[0], urls[1]), strict=True):
            await node.start(url, token)
        await _until(lambda: {"a", "big"} <= far.heard & near.heard, 20, "presence")
        for who in (near, far):
            await _reachable(who, "a", 20)
            await _reachable(who, "big", 20)
            for _ in range(50):  # warm both routes
                await who.request("a")

        progress(f"latency: {rounds} alternating rounds of {requests}, one relay and two")
        single: list[float] = []
        cross: list[float] = []
        for _ in range(rounds):
            for who, into in ((near, single), (far, cross)):
                for _ in range(requests):
                    started = time.perf_counter()
                    await who.request("a")
                    into.append((time.perf_counter() - started) * 1000)

        progress(f"throughput: {stream_chunks} chunks of 64 KiB, {stream_repeats} each way")
        rates: dict[str, list[float]] = {"single": [], "cross": []}
        busy: dict[str, dict[str, float]] = {"single": {}, "cross": {}}
        spent_s: dict[str, dict[str, float]] = {"single": {}, "cross": {}}
        for _ in range(stream_repeats):
            for label, who in (("single", near), ("cross", far)):
                before = cpu()
                started = time.perf_counter()
                got = await who.request("big")
                took = time.perf_counter() - started
                for name, spent in cpu().items():
                    used = spent - before.get(name, 0.0)
                    busy[label][name] = busy[label].get(name, 0.0) + used / took / stream_repeats
                    spent_s[label][name] = spent_s[label].get(name, 0.0) + used
                if got != stream_chunks * CHUNK:
                    raise BenchError(f"{label}: {got} bytes of {stream_chunks * CHUNK}")
                rates[label].append(stream_chunks / took)
    finally:
        for node in nodes:
            await node.stop()
    added = pct(cross, 0.5) - pct(single, 0.5)
    single_rate, cross_rate = pct(rates["single"], 0.5), pct(rates["cross"], 0.5)
    kept = cross_rate / single_rate
    return {
        "latency_ms": {
            "single_p50": round(pct(single, 0.5), 3),
            "single_p99": round(pct(single, 0.99), 3),
            "cross_p50": round(pct(cross, 0.5), 3),
            "cross_p99": round(pct(cross, 0.99), 3),
            "added_p50": round(added, 3),
            "samples_each": len(single),
            "target_added_p50_ms": 2.0,
            "met": added <= 2.0,
        },
        "throughput_chunks_per_s": {
            "single": round(single_rate, 1),
            "cross": round(cross_rate, 1),
            "single_runs": [round(r, 1) for r in rates["single"]],
            "cross_runs": [round(r, 1) for r in rates["cross"]],
            "kept": round(kept, 3),
            "chunk_bytes": CHUNK,
            "cpu_busy_share": {
                label: {name: round(v, 2) for name, v in shares.items()}
                for label, shares in busy.items()
            },
            "cpu_us_per_chunk": {
                label: {
                    name: round(v / (stream_chunks * stream_repeats) * 1e6)
                    for name, v in spent.items()
                    if v
                }
                for label, spent in spent_s.items()
            },
            "cpu_note": "CPU time per chunk of each process over all of a route's runs (from "
            "/proc, counted in clock ticks: coarse for a short run); where the processes "
            "share few cores, the routes' rates follow the sums",
            "target_kept": 0.7,
            "met": kept >= 0.7,
        },
    }
