"""Real ``TunnelClient``s joined to a real relay ``Hub`` in memory: no socket anywhere.

``MemoryRelay.dial`` is what a client calls instead of opening a WebSocket:
it makes a ``MemoryLink``, hands one end to ``Hub.serve`` (as the relay's
``/tunnel`` handler does) and returns the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence

from quorum.errors import AuthRefused, TransportClosed
from quorum.fleet import FleetEvent, PeerHoldersChanged
from quorum.link import Transport
from quorum.protocol import Limits, ModelInfo
from quorum.tunnel import StreamHandler, TunnelClient
from relay.hub import Hub
from tests.harness import timeout
from tests.link.helpers import MemoryLink

CLUSTER = "home"


class ZeroRandom(random.Random):
    """Backoff delays of zero, jitter at its lowest: reconnects happen at once."""

    def random(self) -> float:
        return 0.0


class MemoryRelay:
    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub or Hub()
        self.links: list[MemoryLink] = []
        self.refuse = False
        """Dials fail with 401: the token is wrong."""
        self.down = False
        """Dials fail: nothing listens."""
        self.dials = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def dial(self) -> Transport:
        self.dials += 1
        if self.refuse:
            raise AuthRefused("the relay refused this cluster token (401)")
        if self.down:
            raise TransportClosed("ConnectionRefusedError: nothing listens")
        link = MemoryLink()
        hub_link = self.hub.new_link(CLUSTER, link.relay, f"memory-{len(self.links)}")
        task = asyncio.create_task(self.hub.serve(hub_link), name="hub-serve")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.links.append(link)
        return link.node

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Node:
    """A ``TunnelClient`` and what it reports to its fleet."""

    def __init__(
        self,
        relay: MemoryRelay,
        node_id: str,
        *,
        serve: StreamHandler | None = None,
        models: Sequence[ModelInfo] = (),
        ping_interval: float = 10.0,
        limits: Limits | None = None,
    ) -> None:
        self.id = node_id
        self.fleet: list[FleetEvent] = []
        self.fleet_changed = asyncio.Event()
        self.client = TunnelClient(
            url="memory://relay/tunnel",
            token="unused",
            node_id=node_id,
            node_name=node_id,
            on_fleet=self._on_fleet,
            local_models=lambda: list(models),
            max_body=1 << 20,
            serve_stream=serve or _refuse,
            dial=relay.dial,
            ping_interval=ping_interval,
            limits=limits,
            rng=ZeroRandom(),
        )
        self.task: asyncio.Task[None] | None = None

    def _on_fleet(self, event: FleetEvent) -> None:
        self.fleet.append(event)
        self.fleet_changed.set()

    def knows(self, node_id: str) -> bool:
        holders = [e for e in self.fleet if isinstance(e, PeerHoldersChanged)]
        return bool(holders) and holders[-1].node_id == node_id and bool(holders[-1].holders)

    async def until_knows(self, node_id: str) -> None:
        async with asyncio.timeout(timeout(5)):
            while not self.knows(node_id):
                self.fleet_changed.clear()
                await self.fleet_changed.wait()


async def _refuse(head: object, stream: object) -> None:
    raise AssertionError("this node serves nothing")


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    for node in nodes:
        node.task = asyncio.create_task(node.client.run(), name=f"tunnel-{node.id}")
    try:
        yield
    finally:
        for node in nodes:
            if node.task is not None:
                node.task.cancel()
        await asyncio.gather(*(n.task for n in nodes if n.task), return_exceptions=True)
