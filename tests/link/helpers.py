"""An in-memory WebSocket for ``quorum.link`` pumps, and a node pump joined to a relay pump.

The two ends of a ``MemoryLink`` pass whole messages through queues, in
order, like a WebSocket. Tests shape the link instead of sleeping:
``silence()`` drops everything either end sends (a peer that went quiet
without closing, like a dead NAT mapping: an end that closes it then is not
heard by the other, which finds out by its own keepalive), ``close()`` hangs
up, and a
``gate`` holds one end's sends until the test lets them through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from quorum.errors import TransportClosed
from quorum.link import Ended, Keepalive, Pump, TunnelStream
from quorum.protocol import Connection, Limits, RequestHead, Role
from tests.harness import timeout

HEAD = RequestHead("POST", "/v1/chat/completions", (("content-type", "application/json"),))


class MemoryEnd:
    """One end of a ``MemoryLink``: a ``quorum.link.Transport``."""

    def __init__(self, link: MemoryLink, name: str) -> None:
        self._link = link
        self.name = name
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer: MemoryEnd
        self.sent: list[bytes] = []
        self.gate: asyncio.Semaphore | None = None
        """When set, each send takes one permit: the test releases them one by one."""
        self.held = 0
        """Sends waiting at the gate."""
        self.gone = False
        """This end closed a silent link: closed for it, unheard by the peer."""

    async def send(self, frame: bytes) -> None:
        if self.gate is not None:
            self.held += 1
            try:
                await self.gate.acquire()
            finally:
                self.held -= 1
        if self._link.closed or self.gone:
            raise TransportClosed("closed")
        self.sent.append(frame)
        if not self._link.silent:
            self.peer.inbox.put_nowait(frame)

    async def receive(self) -> bytes:
        if self._link.closed or self.gone:
            raise TransportClosed("closed")
        frame = await self.inbox.get()
        if frame is None:
            raise TransportClosed("closed by the peer")
        return frame

    async def close(self) -> None:
        self._link.close_from(self)

    def stop_reading(self) -> None:
        pass  # in memory: nothing is read but what the test sends

    async def abort(self) -> None:
        self._link.close_from(self)


class MemoryLink:
    """Two ``MemoryEnd``s joined back to back."""

    def __init__(self) -> None:
        self.closed = False
        self.silent = False
        self.node = MemoryEnd(self, "node")
        self.relay = MemoryEnd(self, "relay")
        self.node.peer, self.relay.peer = self.relay, self.node

    def silence(self) -> None:
        """Both ends keep their socket, but nothing gets through any more."""
        self.silent = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.node.inbox.put_nowait(None)
            self.relay.inbox.put_nowait(None)

    def close_from(self, end: MemoryEnd) -> None:
        """``end`` hangs up: the other end hears it, unless the link is silent."""
        if not self.silent:
            self.close()
        elif not end.gone:
            end.gone = True
            end.inbox.put_nowait(None)  # its own reader ends; the peer hears nothing


class Pair:
    """A node pump and a relay pump over one ``MemoryLink``, both running.

    Streams the node opens arrive in ``relay_streams`` (and the other way
    round in ``node_streams``), as a handler would get them.
    """

    def __init__(
        self,
        *,
        keepalive: Keepalive | None = None,
        node_limits: Limits | None = None,
        relay_limits: Limits | None = None,
    ) -> None:
        self.link = MemoryLink()
        self.node_streams: asyncio.Queue[TunnelStream] = asyncio.Queue()
        self.relay_streams: asyncio.Queue[TunnelStream] = asyncio.Queue()
        node_conn = Connection(Role.NODE, node_limits)
        node_conn.send_hello("studio", ["streams"])
        relay_conn = Connection(Role.RELAY, relay_limits)
        relay_conn.send_hello("relay")
        self.node = Pump(
            node_conn,
            self.link.node,
            on_stream=self.node_streams.put_nowait,
            peer="the relay",
            keepalive=keepalive,
            name="node",
        )
        self.relay = Pump(
            relay_conn,
            self.link.relay,
            on_stream=self.relay_streams.put_nowait,
            peer="node studio",
            keepalive=keepalive,
            name="relay",
        )
        self.node_run: asyncio.Task[Ended] | None = None
        self.relay_run: asyncio.Task[Ended] | None = None

    async def start(self) -> Pair:
        self.node_run = asyncio.create_task(self.node.run(), name="node-pump")
        self.relay_run = asyncio.create_task(self.relay.run(), name="relay-pump")
        async with asyncio.timeout(timeout(5)):
            await self.node.wait_for_slot()
            await self.relay.wait_for_slot()
        return self

    async def stop(self) -> None:
        await self.node.close()
        await self.relay.close()
        for task in (self.node_run, self.relay_run):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def accepted(self, queue: asyncio.Queue[TunnelStream] | None = None) -> TunnelStream:
        async with asyncio.timeout(timeout(5)):
            return await (queue or self.relay_streams).get()


@contextlib.asynccontextmanager
async def running_pair(
    *,
    keepalive: Keepalive | None = None,
    node_limits: Limits | None = None,
    relay_limits: Limits | None = None,
) -> AsyncIterator[Pair]:
    pair = Pair(keepalive=keepalive, node_limits=node_limits, relay_limits=relay_limits)
    await pair.start()
    try:
        yield pair
    finally:
        await pair.stop()


async def until(check: Callable[[], bool], seconds: float = 5) -> None:
    """Let the pumps run until ``check()`` holds; fail after ``seconds`` (scaled).

    Yields to the loop between checks: everything here is in memory, so each
    step is the pumps' work, never a wait for time to pass.
    """
    async with asyncio.timeout(timeout(seconds)):
        # One scheduling round per check, no time passing: hence no event to wait on.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def read_all(stream: TunnelStream) -> bytes:
    parts = [chunk async for chunk in stream]
    return b"".join(parts)
