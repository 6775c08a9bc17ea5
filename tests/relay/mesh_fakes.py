"""An in-memory message bus for the mesh (``relay.mesh.bus.Bus``), and nodes on a hub.

``MemoryNats`` delivers like NATS: each subscriber gets every message whose
subject matches (``*`` is one token), in publish order, later on the loop (never
inside ``publish``). Each relay gets its own ``MemoryBus`` client of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from quorum.errors import ApiError
from quorum.link import Pump, TunnelStream
from quorum.protocol import Connection, Limits, ModelInfo, Presence, Role
from relay.hub import Hub, Link
from relay.mesh.bus import Handler
from tests.link.helpers import MemoryLink


def matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


class MemoryNats:
    """The server: every client's subscriptions, and what went through."""

    def __init__(self) -> None:
        self.subs: list[tuple[str, Handler]] = []
        self.answering: list[str] = []  # subjects someone answers requests on
        self.published = 0
        self.bytes = 0
        self.largest = 0  # the longest message that went through

    def deliver(self, subject: str, data: bytes) -> None:
        self.published += 1
        self.bytes += len(data)
        self.largest = max(self.largest, len(data))
        loop = asyncio.get_running_loop()
        for pattern, handler in list(self.subs):
            if matches(pattern, subject):
                loop.call_soon(handler, subject, data)

    def client(self) -> MemoryBus:
        return MemoryBus(self)


class MemoryBus:
    """One relay's connection to a ``MemoryNats``: a ``relay.mesh.bus.Bus``."""

    def __init__(self, server: MemoryNats) -> None:
        self._server = server
        self._mine: list[tuple[str, Handler]] = []
        self._answering: list[str] = []
        self.dead = False

    async def publish(self, subject: str, data: bytes) -> None:
        if not self.dead:  # (a killed relay's connection is gone: nothing gets out)
            self._server.deliver(subject, data)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        entry = (subject, handler)
        self._mine.append(entry)
        self._server.subs.append(entry)

    async def answer(self, subject: str) -> None:
        self._answering.append(subject)
        self._server.answering.append(subject)

    async def ask(self, subject: str, wait_s: float) -> bool | None:
        await asyncio.sleep(0)  # (an answer comes later on the loop, as over a socket)
        if self.dead:
            return None
        return any(matches(s, subject) for s in self._server.answering)

    async def kill(self) -> None:
        """The relay dies without a goodbye: its connection (and subscriptions) are gone."""
        self.dead = True
        await self.close()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        pass  # an in-memory bus is never lost

    async def close(self) -> None:
        for entry in self._mine:
            with contextlib.suppress(ValueError):
                self._server.subs.remove(entry)
        for subject in self._answering:
            with contextlib.suppress(ValueError):
                self._server.answering.remove(subject)


Serve = Callable[[TunnelStream], Awaitable[None]]


class Node:
    """A node's end of a tunnel to a hub, in memory: it says hello and its models, and
    serves each stream the hub opens to it with ``serve``."""

    def __init__(
        self,
        hub: Hub,
        cluster: str,
        node_id: str,
        models: tuple[str, ...],
        serve: Serve,
        *,
        proven: bool = False,
    ) -> None:
        self.memory = MemoryLink()
        self.id = node_id
        self.link: Link = hub.new_link(
            cluster, self.memory.relay, f"mem-{node_id}", proven=node_id if proven else None
        )
        conn = Connection(Role.NODE, Limits(max_streams=512))
        conn.send_hello(node_id, capabilities=("presence", "streams"))
        conn.send_presence(Presence(node_id, tuple(ModelInfo(m) for m in models), True, 0, node_id))
        self.heard: dict[str, Presence] = {}
        self._serve = serve
        self._tasks: set[asyncio.Task[None]] = set()
        self.pump = Pump(
            conn,
            self.memory.node,
            on_event=self._event,
            on_stream=self._stream,
            peer="the relay",
            name=f"node-{node_id}",
        )
        self._runs = [
            asyncio.create_task(hub.serve(self.link), name=f"hub-{node_id}"),
            asyncio.create_task(self._run(), name=f"node-{node_id}"),
        ]

    async def _run(self) -> None:
        await self.pump.run()

    def _event(self, event: object) -> None:
        presence = getattr(event, "presence", None)
        if isinstance(presence, Presence):
            self.heard[presence.node_id] = presence

    def _stream(self, stream: TunnelStream) -> None:
        task = asyncio.create_task(self._served(stream), name=f"serve-{stream.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _served(self, stream: TunnelStream) -> None:
        # A stream cut by the test: its error is the other end's to see.
        with contextlib.suppress(ApiError):
            await self._serve(stream)

    def online(self, node_id: str) -> bool:
        return node_id in self.heard and self.heard[node_id].online

    async def stop(self) -> None:
        await self.pump.close()
        for task in [*self._runs, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._runs, *self._tasks, return_exceptions=True)
