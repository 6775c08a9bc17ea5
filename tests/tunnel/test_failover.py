"""Real ``TunnelClient``s with two relays' hubs joined by the mesh, in memory: a node whose
relay drains moves to the next one at once, while its running stream finishes where it
began; a node whose relay goes away reconnects to the next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from quorum.link import Transport, TunnelStream
from quorum.protocol import ModelInfo, RequestHead, ResponseHead
from quorum.tunnel import TunnelClient
from quorum.tunnel.streams import TunnelResponse
from relay.hub import Hub
from relay.mesh.mesh import Mesh
from tests.harness import timeout
from tests.link.helpers import read_all, until
from tests.relay.mesh_fakes import MemoryNats
from tests.tunnel.helpers import MemoryRelay, ZeroRandom

URLS = ("memory://r1/tunnel", "memory://r2/tunnel")


class Slow:
    """Serves each request with chunks it lets out one by one (``release``)."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(0)
        self.served = 0

    async def __call__(self, head: RequestHead, stream: TunnelStream) -> None:
        await read_all(stream)
        stream.send_response(ResponseHead(200, ()))
        if head.path == "/slow":
            for _ in range(3):
                await self.gate.acquire()
                await stream.send_all(b"chunk.")
        else:
            await stream.send_all(b"quick")
        await stream.send_eof()
        self.served += 1


def client(
    relays: dict[str, MemoryRelay], node: str, urls: tuple[str, ...], serve: Slow
) -> TunnelClient:
    async def dial(url: str) -> Transport:
        return await relays[url].dial()

    return TunnelClient(
        url=urls[0],
        other_urls=urls[1:],
        token="unused",
        node_id=node,
        node_name=node,
        on_fleet=lambda _: None,
        local_models=lambda: [ModelInfo("m")],
        max_body=1 << 20,
        serve_stream=serve,
        dial_url=dial,
        rng=ZeroRandom(),
    )


@pytest.fixture
async def relays() -> AsyncIterator[dict[str, MemoryRelay]]:
    nats = MemoryNats()
    made: dict[str, MemoryRelay] = {}
    meshes = []
    for n, url in enumerate(URLS, start=1):
        hub = Hub()
        mesh = Mesh(hub, nats.client(), prefix="t", relay_id=f"r{n}", alive_every=0.5)
        await mesh.start()
        meshes.append(mesh)
        made[url] = MemoryRelay(hub)
    yield made
    for relay in made.values():
        await relay.close()
    for mesh in meshes:
        await mesh.close()


async def test_a_draining_relay_is_left_at_once_and_its_running_stream_finishes(
    relays: dict[str, MemoryRelay],
) -> None:
    r1, r2 = (relays[u].hub for u in URLS)
    serve = Slow()
    a = client(relays, "a", URLS, serve)
    b = client(relays, "b", URLS[::-1], Slow())
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await until(lambda: r1.link("home", "a") is not None and r2.route("home", "a") is not None)
        await until(lambda: b._pump is not None and b._pump.can_open_stream())
        slow = await b.request("a", "GET", "/slow", [], b"", timeout(5))
        assert isinstance(slow, TunnelResponse)
        body = slow.chunks()
        serve.gate.release()
        first = await anext(body)
        drain = asyncio.create_task(r1.drain(timeout(10)))  # SIGTERM at relay 1
        # A is on relay 2 at once, though its stream through relay 1 still runs.
        await until(lambda: r2.link("home", "a") is not None)
        assert not drain.done()  # (it waits for that stream)
        quick = await b.request("a", "GET", "/quick", [], b"", timeout(5))
        assert isinstance(quick, TunnelResponse)
        assert b"".join([c async for c in quick.chunks()]) == b"quick"
        serve.gate.release()
        serve.gate.release()
        assert first + b"".join([c async for c in body]) == b"chunk." * 3
        await asyncio.wait_for(drain, timeout(10))
        assert a.relay_url == URLS[1] and a.status.connected
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_node_whose_relay_goes_away_reconnects_to_the_next(
    relays: dict[str, MemoryRelay],
) -> None:
    r1, r2 = (relays[u].hub for u in URLS)
    a = client(relays, "a", URLS, Slow())
    task = asyncio.create_task(a.run())
    try:
        await until(lambda: r1.link("home", "a") is not None)
        relays[URLS[0]].down = True  # relay 1 dies: its tunnels close, dials fail
        for link in relays[URLS[0]].links:
            link.close()
        await until(lambda: r2.link("home", "a") is not None)
        assert a.relay_url == URLS[1] and relays[URLS[0]].dials == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
