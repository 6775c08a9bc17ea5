"""Fake nodes on the relay's ``/tunnel``: many idle connections, many held-open streams.

``python3 -m bench.tunnels --url ws://127.0.0.1:P/tunnel`` reads commands as
JSON lines on stdin and answers each with one JSON line on stdout:

- ``{"op": "connect", "group": G, "count": N, "token": T}``: open ``N``
  WebSocket connections with the cluster token in the upgrade's
  ``Authorization`` header; each sends HELLO as node ``G-<i>`` (so the relay
  counts it as a node) and nothing else: no presence, so no other node hears
  of it. Answers once every connection has the relay's HELLO back. With
  ``"models": [...]``, each also sends its presence (those models) after HELLO,
  as a node does: the relay tells the cluster's other nodes (and, with several
  relays, the mesh).
- ``{"op": "beat", "group": G}``: each connection of ``G`` sends its presence
  again (a heartbeat); answers once all are written.
- ``{"op": "streams", "group": G, "to": H, "count": N}``: the connections of
  ``G`` open ``N`` streams between them (round-robin), each addressed to a
  node of group ``H``, as a node asks for a chat completion. Each node of
  ``H`` answers every stream with an SSE response head and one event and
  keeps it open. Answers once every stream has its first event.
- ``{"op": "close", "group": G}``: close the group's connections.

Every connection answers the relay's PINGs (the protocol queues the PONG),
so it stays alive as long as this process runs. On start it prints
``{"ready": true}``. Everything speaks :mod:`quorum.protocol`, the codec node
and relay share; the token never leaves stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bench import aio
from quorum.errors import ProtocolError
from quorum.protocol import (
    MAX_FRAME_SIZE,
    Connection,
    DataReceived,
    HelloReceived,
    Limits,
    ModelInfo,
    Presence,
    RequestHead,
    ResponseHead,
    Role,
    StreamOpened,
    StreamReset,
)

CONNECT_PARALLEL = 64
# A node of these groups accepts as many streams as the relay may open to it.
FAKE_LIMITS = Limits(max_streams=4096, max_opens_per_second=100_000.0)
SSE_HEAD = ResponseHead(200, (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")))
FIRST_EVENT = b'data: {"object":"chat.completion.chunk","choices":[]}\n\n'
REQUEST_HEADERS = (("Content-Type", "application/json"), ("User-Agent", "OpenAI/Python 1.54.0"))


class FakeNode:
    """One tunnel connection: the protocol, pumped by a reader task; serves and opens streams."""

    def __init__(self, ws: ClientConnection, node_id: str, models: tuple[str, ...] = ()) -> None:
        self.ws = ws
        self.node_id = node_id
        self.models = models
        self.conn = Connection(Role.NODE, FAKE_LIMITS)
        self.hello = asyncio.get_running_loop().create_future()
        self.waiting: dict[int, asyncio.Future[bool]] = {}  # streams we opened, until data
        self._lock = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.conn.send_hello(self.node_id, capabilities=("streams",))
        await self.flush()
        self.reader = asyncio.create_task(self._read(), name=f"fake-node-{self.node_id}")
        await self.hello
        if self.models:
            await self.beat()

    async def beat(self) -> None:
        """Send this node's presence (its models), as a node's heartbeat does."""
        models = tuple(ModelInfo(m) for m in self.models)
        self.conn.send_presence(Presence(self.node_id, models, True, 0, self.node_id))
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            for frame in self.conn.data_to_send():
                await self.ws.send(frame)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    return
                for event in self.conn.receive_frame(message, loop.time()):
                    self._event(event)
                await self.flush()
        except (websockets.ConnectionClosed, ProtocolError, OSError):
            pass
        finally:
            if not self.hello.done():
                self.hello.set_exception(ConnectionError(f"{self.node_id}: closed before HELLO"))
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_result(False)

    def _event(self, event: object) -> None:
        match event:
            case HelloReceived():
                if not self.hello.done():
                    self.hello.set_result(None)
            case StreamOpened(sid, _, _):
                self.conn.send_response_head(sid, SSE_HEAD)
                self.conn.send_data(sid, FIRST_EVENT)
            case DataReceived(sid, data):
                self.conn.consumed(sid, len(data))
                waiter = self.waiting.pop(sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(True)
            case StreamReset(sid, _, _, _):
                waiter = self.waiting.pop(sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(False)

    def open_stream(self, target: str) -> asyncio.Future[bool]:
        head = RequestHead("POST", "/v1/chat/completions", REQUEST_HEADERS, node=target)
        sid = self.conn.open_stream(head, end_stream=True)
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting[sid] = waiter
        return waiter

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


class Fleet:
    def __init__(self, url: str) -> None:
        self.url = url
        self.groups: dict[str, list[FakeNode]] = {}

    async def _open(
        self, node_id: str, token: str, gate: asyncio.Semaphore, models: tuple[str, ...] = ()
    ) -> FakeNode:
        async with gate:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                user_agent_header="quorum-bench",
                max_size=MAX_FRAME_SIZE,
                ping_interval=None,  # liveness is the protocol's own PING
                compression=None,
                open_timeout=10,
            )
            node = FakeNode(ws, node_id, models)
            try:
                async with asyncio.timeout(10):
                    await node.start()
            except BaseException:
                await node.close()
                raise
            return node

    async def connect(
        self, group: str, count: int, token: str, models: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        start = time.perf_counter()
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        results = await asyncio.gather(
            *(self._open(f"{group}-{i}", token, gate, models) for i in range(count)),
            return_exceptions=True,
        )
        nodes = [r for r in results if isinstance(r, FakeNode)]
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        self.groups.setdefault(group, []).extend(nodes)
        return {
            "open": len(nodes),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
            "elapsed_s": round(time.perf_counter() - start, 3),
        }

    async def streams(self, group: str, to: str, count: int) -> dict[str, Any]:
        start = time.perf_counter()
        openers, targets = self.groups.get(group, []), self.groups.get(to, [])
        if not openers or not targets:
            raise ValueError(f"no connections in group {group!r} or {to!r}")
        waiters = []
        refused = 0
        for i in range(count):
            opener = openers[i % len(openers)]
            try:
                waiters.append(opener.open_stream(targets[i % len(targets)].node_id))
            except ProtocolError:
                refused += 1
        await asyncio.gather(*(node.flush() for node in openers))
        held = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                held = sum(await asyncio.gather(*waiters))
        return {
            "held": held,
            "failed": count - held,
            "refused_locally": refused,
            "elapsed_s": round(time.perf_counter() - start, 3),
        }

    async def beat(self, group: str) -> dict[str, Any]:
        nodes = self.groups.get(group, [])
        await asyncio.gather(*(node.beat() for node in nodes))
        return {"sent": len(nodes)}

    async def close(self, group: str) -> dict[str, Any]:
        nodes = self.groups.pop(group, [])
        await asyncio.gather(*(node.close() for node in nodes))
        return {"closed": len(nodes)}

    async def close_all(self) -> None:
        for group in list(self.groups):
            await self.close(group)


async def command(fleet: Fleet, line: bytes) -> dict[str, Any]:
    try:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "connect":
            models = tuple(str(m) for m in cmd.get("models", ()))
            group, count, token = str(cmd["group"]), int(cmd["count"]), str(cmd["token"])
            return await fleet.connect(group, count, token, models)
        if op == "beat":
            return await fleet.beat(str(cmd["group"]))
        if op == "streams":
            return await fleet.streams(str(cmd["group"]), str(cmd["to"]), int(cmd["count"]))
        if op == "close":
            return await fleet.close(str(cmd["group"]))
        raise ValueError(f"unknown op {op!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def serve(url: str, uvloop_used: bool) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = Fleet(url)
    print(json.dumps({"ready": True, "uvloop": uvloop_used}), flush=True)
    try:
        while line := await reader.readline():
            print(json.dumps(await command(fleet, line)), flush=True)
    finally:
        await fleet.close_all()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.tunnels", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the relay's tunnel, ws://127.0.0.1:P/tunnel")
    args = p.parse_args(argv)
    aio.run(lambda uvloop_used: serve(args.url, uvloop_used))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
