"""``python3 -m bench.relays [--quick] [--nats URL]``: what a second relay costs a stream.

Three relays' hubs and meshes in this process, each with its own connection to a real
NATS server (``--nats``, default the machine's 127.0.0.1:4222; a fresh subject prefix),
and nodes on in-memory tunnels (no HTTP, no engine: what is measured is the relays'
part). In one run, each against its baseline measured alongside:

- **latency**: a small request and answer at concurrency 1, node B to node A, both on
  relay 1 (the single-relay route) against B on relay 2 and A on relay 1 (one hop
  through NATS); rounds alternate, p50 and p99 of each; target: at most 2 ms added at p50;
- **throughput**: a large answer in 64 KiB chunks, chunks/s across relays against on one
  relay; target: at least 70 % kept;
- **presence**: announcements a relay takes in per second (decode, directory, telling its
  own nodes), and NATS messages per node heartbeat;
- **memory**: bytes a relay holds per node another relay holds (``tracemalloc``, 10,000
  simulated idle nodes spread over the three relays: what the mesh adds to the tunnel's
  own cost, which ``bench relay`` measures); target: under 50 KiB in all.

Everything runs on one event loop, so the relays share one core here: absolute numbers
are an upper bound of the real cost. Targets are reported, never asserted. Exit 1 if
NATS cannot be reached or a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from quorum.errors import QuorumError, TransportClosed
from quorum.link import Pump, TunnelStream
from quorum.protocol import (
    Connection,
    Limits,
    ModelInfo,
    Presence,
    RequestHead,
    ResponseHead,
    Role,
)
from relay.hub import Hub
from relay.mesh.bus import NatsBus
from relay.mesh.mesh import Mesh
from relay.mesh.wire import NodeAnnounced, encode

CLUSTER = "bench"
CHUNK = 65536


class _End:
    """One end of an in-memory WebSocket (``quorum.link.Transport``)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer: _End

    async def send(self, frame: bytes) -> None:
        self.peer.inbox.put_nowait(frame)

    async def receive(self) -> bytes:
        frame = await self.inbox.get()
        if frame is None:
            raise TransportClosed("closed")
        return frame

    async def close(self) -> None:
        self.inbox.put_nowait(None)
        self.peer.inbox.put_nowait(None)

    def stop_reading(self) -> None:
        pass  # in memory: the bench's frames are all well formed

    async def abort(self) -> None:
        await self.close()


Serve = Callable[[TunnelStream], Coroutine[Any, Any, None]]


class _Node:
    def __init__(self, hub: Hub, node_id: str, serve: Serve, models: tuple[str, ...]) -> None:
        node_end, relay_end = _End(), _End()
        node_end.peer, relay_end.peer = relay_end, node_end
        self.link = hub.new_link(CLUSTER, relay_end, node_id)
        conn = Connection(Role.NODE, Limits(max_streams=512, max_opens_per_second=100_000.0))
        conn.send_hello(node_id, capabilities=("presence", "streams"))
        conn.send_presence(Presence(node_id, tuple(ModelInfo(m) for m in models), True, 0, node_id))
        self.heard: set[str] = set()
        self.serve = serve
        self.pump = Pump(conn, node_end, on_event=self._event, on_stream=self._stream)
        self.tasks = {asyncio.create_task(hub.serve(self.link)), asyncio.create_task(self._run())}

    async def _run(self) -> None:
        await self.pump.run()

    def _event(self, event: object) -> None:
        presence = getattr(event, "presence", None)
        if isinstance(presence, Presence) and presence.online:
            self.heard.add(presence.node_id)

    def _stream(self, stream: TunnelStream) -> None:
        task = asyncio.create_task(self.serve(stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        await self.pump.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _drain(stream: TunnelStream) -> int:
    total = 0
    while chunk := await stream.receive_some():
        total += len(chunk)
    return total


def _server(answer_chunks: int) -> Serve:
    async def serve(stream: TunnelStream) -> None:
        await _drain(stream)
        stream.send_response(ResponseHead(200, ()))
        if answer_chunks:
            chunk = b"x" * CHUNK
            for _ in range(answer_chunks):
                await stream.send_all(chunk)
        else:
            await stream.send_all(b'{"ok":true}')
        await stream.send_eof()

    return serve


async def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise QuorumError(f"{what} did not happen within {seconds:g} s")
        await asyncio.sleep(0.01)


async def _request(b: _Node, target: str) -> int:
    stream = b.pump.open_stream(RequestHead("POST", "/x", (), node=target), end_stream=False)
    await stream.send_all(b'{"q":1}')
    await stream.send_eof()
    head = await stream.response()
    if head.status != 200:
        raise QuorumError(f"status {head.status}")
    return await _drain(stream)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Settings:
    rounds: int = 10
    requests: int = 100  # per round and route
    stream_chunks: int = 1024  # 64 MiB
    idle_nodes: int = 10_000
    announcements: int = 20_000


QUICK = Settings(rounds=2, requests=50, stream_chunks=128, idle_nodes=1000, announcements=2000)


async def run(url: str, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    hubs: list[Hub] = []
    meshes: list[Mesh] = []
    for n in range(3):
        hub = Hub()
        bus = await NatsBus.connect(url, name=f"bench-relay-{n + 1}")
        mesh = Mesh(hub, bus, prefix=prefix, relay_id=f"r{n + 1}")
        await mesh.start()
        hubs.append(hub)
        meshes.append(mesh)
    nodes: list[_Node] = []
    try:
        a = _Node(hubs[0], "a", _server(0), ("m",))
        big = _Node(hubs[0], "big", _server(settings.stream_chunks), ("big",))
        near = _Node(hubs[0], "b-near", _server(0), ())
        far = _Node(hubs[1], "b-far", _server(0), ())
        nodes += [a, big, near, far]
        await _until(
            lambda: {"a", "big"} <= far.heard and {"a", "big"} <= near.heard, 10, "presence"
        )
        await _until(
            lambda: far.pump.can_open_stream() and near.pump.can_open_stream(), 10, "hellos"
        )
        await _until(
            lambda: (
                (p := meshes[1]._peers.get("r1")) is not None
                and p.pump is not None
                and p.pump.can_open_stream()
            ),
            10,
            "the relays' connection",
        )
        for who in (near, far):  # warm both routes
            for _ in range(20):
                await _request(who, "a")

        progress("latency: alternating rounds, one relay and across two")
        single: list[float] = []
        cross: list[float] = []
        for _ in range(settings.rounds):
            for who, into in ((near, single), (far, cross)):
                for _ in range(settings.requests):
                    started = time.perf_counter()
                    await _request(who, "a")
                    into.append((time.perf_counter() - started) * 1000)
        p50_single, p50_cross = _pct(single, 0.5), _pct(cross, 0.5)

        progress("throughput: a large answer, one relay and across two")
        rates: dict[str, float] = {}
        for label, who in (("single", near), ("cross", far)):
            started = time.perf_counter()
            got = await _request(who, "big")
            took = time.perf_counter() - started
            if got != settings.stream_chunks * CHUNK:
                raise QuorumError(f"{label}: {got} bytes of {settings.stream_chunks * CHUNK}")
            rates[label] = settings.stream_chunks / took

        progress("presence: announcements a relay takes in")
        listener = meshes[2]
        messages = [
            encode(NodeAnnounced("r9", CLUSTER, Presence(f"p{i}", (ModelInfo("m"),)), 1.0))
            for i in range(settings.announcements)
        ]
        started = time.process_time()
        for data in messages:
            listener._heard(f"{prefix}.presence", data)
        per_s = settings.announcements / max(time.process_time() - started, 1e-9)
        before = meshes[0].announced
        beat = Presence("a", (ModelInfo("m"),), True, 0, "a")
        a.pump.send_presence(beat)
        await _until(lambda: meshes[0].announced > before, 5, "a heartbeat's announcement")

        progress(f"memory: {settings.idle_nodes} idle nodes held by the other relays")
        observer = Mesh(Hub(), meshes[2].bus, prefix=prefix + "x", relay_id="observer")
        models = (ModelInfo("llama3.1:8b", "llm", "ollama"),)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for i in range(settings.idle_nodes):
            presence = Presence(f"node-{i:05d}", models, True, 0, f"node {i}")
            observer.directory.apply(NodeAnnounced(f"r{i % 3 + 1}", CLUSTER, presence, 1.0), 1.0)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_node = (held - base) / settings.idle_nodes

        added = p50_cross - p50_single
        kept = rates["cross"] / rates["single"]
        return {
            "suite": "relays",
            "nats": url.split("@")[-1],
            "latency_ms": {
                "single_p50": round(p50_single, 3),
                "single_p99": round(_pct(single, 0.99), 3),
                "cross_p50": round(p50_cross, 3),
                "cross_p99": round(_pct(cross, 0.99), 3),
                "added_p50": round(added, 3),
                "samples_each": len(single),
                "target_added_p50_ms": 2.0,
                "met": added <= 2.0,
            },
            "throughput_chunks_per_s": {
                "single": round(rates["single"], 1),
                "cross": round(rates["cross"], 1),
                "kept": round(kept, 3),
                "chunk_bytes": CHUNK,
                "target_kept": 0.7,
                "met": kept >= 0.7,
            },
            "presence": {
                "announcements_taken_per_s": round(per_s),
                "nats_messages_per_heartbeat": 1,
                "relay_alive_messages_per_s": round(1 / meshes[0].alive_every, 2),
            },
            "memory": {
                "idle_nodes": settings.idle_nodes,
                "mesh_bytes_per_remote_node": round(per_node),
                "target_bytes": 50 * 1024,
                "met": per_node < 50 * 1024,
                "note": "what the mesh adds per node another relay holds; a tunnel's own "
                "cost is bench relay's",
            },
        }
    finally:
        for node in nodes:
            await node.stop()
        for mesh in meshes:
            await mesh.close()
            await mesh.bus.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.relays", description=__doc__.split("\n")[0])
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--quick", action="store_true", help="a smoke run (a few seconds)")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        report = asyncio.run(run(args.nats, QUICK if args.quick else Settings(), progress))
    except QuorumError as exc:
        print(f"bench.relays: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
