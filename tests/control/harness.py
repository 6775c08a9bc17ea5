"""An in-process relay on port 0 with an injected clock, and a bare node that serves streams.

For control-plane tests that need to move time (presence expiry, key TTLs)
without sleeping: the relay's app runs on the test's own loop, its hub reads
``clock``, and a ``ServingNode`` speaks the tunnel protocol on a real
WebSocket and answers the streams the relay opens with a canned response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from quorum.protocol import (
    MAX_FRAME_SIZE,
    Connection,
    DataReceived,
    ModelInfo,
    Presence,
    ResponseHead,
    Role,
    StreamEnded,
    StreamOpened,
)
from quorum.ratelimit import FailureLimiter
from relay.hub import Hub
from relay.server import build_app
from relay.sqlite_store import SqliteStore

ADMIN = "qa_test-admin-token-0123456789"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InProcessRelay:
    def __init__(self, data: Path, clock: FakeClock, limiter: FailureLimiter | None = None) -> None:
        self.store = SqliteStore(data)
        self.clock = clock
        self.hub = Hub(clock=clock)
        self.app = build_app(self.store, self.hub, admin_token=ADMIN, limiter=limiter)
        self.runner = web.AppRunner(self.app, handler_cancellation=True)
        self.port = 0

    async def start(self) -> InProcessRelay:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/tunnel"

    async def close(self) -> None:
        await self.runner.cleanup()
        self.store.close()


Answer = Callable[[str, str, bytes], tuple[int, bytes]]


def echo(method: str, path: str, body: bytes) -> tuple[int, bytes]:
    data = json.loads(body) if body else {}
    return 200, json.dumps(
        {
            "path": path,
            "model": data.get("model"),
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        }
    ).encode()


class ServingNode:
    """A node reduced to the protocol: hello, presence on demand, canned answers."""

    def __init__(self, url: str, token: str, node_id: str, answer: Answer = echo) -> None:
        self.url, self.token, self.node_id, self.answer = url, token, node_id, answer
        self.conn = Connection(Role.NODE)
        self.served: list[str] = []
        self._bodies: dict[int, tuple[str, str, bytearray]] = {}
        self._task: asyncio.Task[None] | None = None
        self.ws: ClientConnection | None = None

    async def __aenter__(self) -> ServingNode:
        self.ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=MAX_FRAME_SIZE,
            ping_interval=None,
            compression=None,
        )
        self.conn.send_hello(self.node_id)
        await self.flush()
        self._task = asyncio.create_task(self._read(), name=f"serving-node-{self.node_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    async def flush(self) -> None:
        assert self.ws is not None
        for frame in self.conn.data_to_send():
            await self.ws.send(frame)

    async def heartbeat(self, models: list[tuple[str, str]], name: str = "") -> None:
        infos = tuple(ModelInfo(m, t) for m, t in models)
        self.conn.send_presence(Presence(self.node_id, infos, True, 0, name or self.node_id))
        await self.flush()

    async def _read(self) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                assert isinstance(data, bytes)
                for event in self.conn.receive_frame(data, loop.time()):
                    match event:
                        case StreamOpened(sid, head, end_stream):
                            self._bodies[sid] = (head.method, head.path, bytearray())
                            if end_stream:
                                self._serve(sid)
                        case DataReceived(sid, chunk):
                            self._bodies[sid][2].extend(chunk)
                            self.conn.consumed(sid, len(chunk))
                        case StreamEnded(sid) if sid in self._bodies:
                            self._serve(sid)
                await self.flush()

    def _serve(self, sid: int) -> None:
        method, path, body = self._bodies.pop(sid)
        self.served.append(path)
        status, payload = self.answer(method, path, bytes(body))
        headers = (("Content-Type", "application/json"), ("X-Quorum-Node", self.node_id))
        self.conn.send_response_head(sid, ResponseHead(status, headers))
        self.conn.send_data(sid, payload)
        self.conn.end_stream(sid)
