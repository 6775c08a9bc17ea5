"""The mesh on a real NATS server of this test's own (``nats-server`` on a free loopback
port): two relays' hubs find each other's nodes and hand streams through it, and after
the server restarts they reconnect, say again what they hold, and hand streams again."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quorum.protocol import RequestHead
from relay.hub import Hub
from relay.mesh.bus import MeshError, NatsBus
from relay.mesh.mesh import Mesh
from tests.harness import free_port, timeout
from tests.link.helpers import read_all, until
from tests.relay.mesh_fakes import Node
from tests.relay.test_mesh_hubs import echo

CLUSTER = "c1"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.tmp / "nats.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout(10))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def connect(url: str, name: str) -> NatsBus:
    """The bus, once the server takes connections (it was just started)."""
    async with asyncio.timeout(timeout(10)):
        while True:
            try:
                return await NatsBus.connect(url, name=name)
            except MeshError:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def two_relays(url: str) -> AsyncIterator[tuple[Hub, Hub, list[Node]]]:
    hubs: list[Hub] = []
    meshes: list[Mesh] = []
    nodes: list[Node] = []
    for n in (1, 2):
        hub = Hub(ping_interval=5.0)
        mesh = Mesh(hub, await connect(url, f"relay-{n}"), prefix="t", relay_id=f"r{n}")
        await mesh.start()
        hubs.append(hub)
        meshes.append(mesh)
    try:
        yield hubs[0], hubs[1], nodes
    finally:
        for node in nodes:
            await node.stop()
        for mesh in meshes:
            await mesh.close()
            await mesh.bus.close()


async def ask(node: Node, target: str, text: bytes) -> bytes:
    stream = node.pump.open_stream(RequestHead("POST", "/x", (), node=target), end_stream=False)
    await stream.send_all(text)
    await stream.send_eof()
    assert (await stream.response()).status == 200
    return await read_all(stream)


async def test_relays_meet_over_nats_and_again_after_it_restarts(
    nats_server: NatsServer,
) -> None:
    async with two_relays(nats_server.url) as (one, two, nodes):
        nodes.append(Node(one, CLUSTER, "a", ("m",), echo))
        b = Node(two, CLUSTER, "b", (), echo)
        nodes.append(b)
        await until(lambda: b.online("a") and b.pump.can_open_stream(), 10)
        route = two.route(CLUSTER, "a")
        assert route is not None and route.via == "r1"
        # The route's pump, each time: the relays may start their connection over (both
        # start at once: the loser's start gives way to its answer to the winner's).
        await until(
            lambda: (r := two.route(CLUSTER, "a")) is not None and r.pump.can_open_stream(), 10
        )
        assert b'"got": "before"' in await ask(b, "a", b"before")

        nats_server.stop()
        nats_server.start()  # the same port: the relays reconnect by themselves
        await until(lambda: (r := two.route(CLUSTER, "a")) is not None and r.via == "r1", 20)
        answer = b""
        async with asyncio.timeout(timeout(20)):
            while b'"got": "after"' not in answer:
                with contextlib.suppress(Exception):  # until the relays' connection is back
                    async with asyncio.timeout(timeout(2)):
                        answer = await ask(b, "a", b"after")
                await asyncio.sleep(0.1)
