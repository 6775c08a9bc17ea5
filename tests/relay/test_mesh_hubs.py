"""Relays joined by the mesh, in memory (hubs, pumps and the mesh's own code, a bus that
delivers like NATS, nodes on in-memory tunnels): presence and location, hand-off with
credit across the hop, one hop at most, removals, a relay that leaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from quorum.errors import ApiError, StreamRefused
from quorum.link import TunnelStream
from quorum.protocol import Limits, RequestHead, ResetCode, ResponseHead
from quorum.protocol.limits import STREAM_WINDOW_BASE
from quorum.secure.hop import HOP_PATH, RELAY_CERT_HEADER
from relay.hub import Hub
from relay.mesh.mesh import Mesh
from relay.mesh.wire import tag
from tests.link.helpers import read_all, until
from tests.relay.mesh_fakes import MemoryNats, Node

CLUSTER = "c1"
HEAD = RequestHead("POST", "/v1/chat/completions", (("Content-Type", "application/json"),))


async def echo(stream: TunnelStream) -> None:
    """Answer with what the request said, and who answered."""
    body = await read_all(stream)
    stream.send_response(ResponseHead(200, (("Content-Type", "application/json"),)))
    await stream.send_all(json.dumps({"got": body.decode(), "path": stream.head.path}).encode())
    await stream.send_eof()


FLOOD_CHUNKS = 512  # 32 MiB: eight times the largest window a stream may grow to


async def flood(stream: TunnelStream) -> None:
    """Answer with far more than any window, as fast as credit allows."""
    await read_all(stream)
    stream.send_response(ResponseHead(200, ()))
    chunk = b"x" * 65536
    for _ in range(FLOOD_CHUNKS):
        await stream.send_all(chunk)
    await stream.send_eof()


@dataclass
class Relay:
    hub: Hub
    mesh: Mesh
    nodes: list[Node] = field(default_factory=list)

    def node(
        self,
        node_id: str,
        models: tuple[str, ...] = ("m",),
        serve: object = echo,
        *,
        proven: bool = False,
    ) -> Node:
        made = Node(self.hub, CLUSTER, node_id, models, serve, proven=proven)  # type: ignore[arg-type]
        self.nodes.append(made)
        return made


@pytest.fixture
async def relays() -> AsyncIterator[list[Relay]]:
    nats = MemoryNats()
    made = []
    for n in range(3):
        hub = Hub(ping_interval=5.0)
        mesh = Mesh(hub, nats.client(), prefix="t", relay_id=f"r{n + 1}", alive_every=0.5)
        await mesh.start()
        made.append(Relay(hub, mesh))
    yield made
    for relay in made:
        for node in relay.nodes:
            await node.stop()
        await relay.mesh.close()


async def test_a_node_elsewhere_is_seen_and_reached_through_its_relay(
    relays: list[Relay],
) -> None:
    one, two, three = relays
    a = one.node("a")
    b = two.node("b")
    # B hears of A (held by relay 1) from relay 2; relay 3 knows where A is.
    await until(lambda: b.online("a") and a.online("b"))
    await until(lambda: three.hub.route(CLUSTER, "a") is not None)
    route = three.hub.route(CLUSTER, "a")
    assert route is not None and route.via == "r1"
    assert [link.node_id for link in three.hub.reachable(CLUSTER)] == ["a", "b"]
    assert one.hub.link(CLUSTER, "b") is None  # the hub's own links stay its own

    # Node B opens a stream to A through relay 2: relay 2 hands it to relay 1.
    await until(lambda: b.pump.can_open_stream())
    stream = b.pump.open_stream(RequestHead("POST", "/x", (), node="a"), end_stream=False)
    await stream.send_all(b"hello")
    await stream.send_eof()
    head = await stream.response()
    got = json.loads(await read_all(stream))
    assert head.status == 200 and got == {"got": "hello", "path": "/x"}
    assert two.hub.streams_piped == 1 and one.hub.streams_piped == 1  # piped on each side

    # Relay 3 serves a public request with A, whose tunnel is at relay 1.
    await until(lambda: route.pump.can_open_stream())
    local = three.hub.open_local(route, HEAD, end_stream=False)
    await local.send_body(b"from an app")
    assert (await local.response).status == 200
    body = b"".join([chunk async for chunk in local.body()])
    assert json.loads(body)["got"] == "from an app"
    assert three.hub.streams_served == 1


async def test_a_slow_reader_on_one_relay_never_grows_the_others_memory(
    relays: list[Relay],
) -> None:
    one, two, _ = relays
    one.node("a", serve=flood)
    b = two.node("b")
    await until(lambda: b.online("a") and b.pump.can_open_stream())
    stream = b.pump.open_stream(RequestHead("GET", "/big", (), node="a"), end_stream=True)
    assert (await stream.response()).status == 200
    # B reads one chunk and then nothing: no credit goes back.
    first = await stream.receive_some()
    await until(lambda: stream.unconsumed >= STREAM_WINDOW_BASE - len(first), 10)
    for _ in range(500):  # give the flood every chance to push more
        await asyncio.sleep(0)
    # What each relay holds is bounded by the windows (a stream's grows while its reader
    # keeps up, to ``max_window`` at most), not by the answer: the flood waits for credit.
    largest = Limits().max_window
    assert 0 < one.hub.buffered_bytes <= largest and two.hub.buffered_bytes <= largest
    assert stream.unconsumed <= largest
    held = one.hub.buffered_bytes + two.hub.buffered_bytes + stream.unconsumed
    assert held < FLOOD_CHUNKS * 65536 / 4
    # Reading again lets the whole answer through.
    rest = await read_all(stream)
    assert len(first) + len(rest) == FLOOD_CHUNKS * 65536


async def test_a_handed_off_stream_goes_one_hop_and_no_further(relays: list[Relay]) -> None:
    one, two, three = relays
    one.node("a")
    await until(lambda: two.hub.route(CLUSTER, "a") is not None)
    await until(lambda: three.hub.route(CLUSTER, "a") is not None)
    # Relay 3 hands relay 2 a stream for A, which relay 2 does not hold: relay 2 refuses it
    # rather than passing it on to relay 1.
    peer = three.mesh.connections.pump("r2")
    assert peer is not None
    await until(peer.can_open_stream)
    stream = peer.open_stream(tag(RequestHead("GET", "/", ()), CLUSTER, "a"), end_stream=True)
    with pytest.raises(ApiError):
        await stream.response()
    assert stream.reset_info is not None and stream.reset_info.code is ResetCode.NO_ROUTE
    assert one.hub.streams_piped == 0


async def test_a_removal_closes_the_node_at_the_relay_that_holds_it(
    relays: list[Relay],
) -> None:
    one, two, three = relays
    a = one.node("a")
    b = two.node("b")
    await until(lambda: b.online("a") and three.hub.route(CLUSTER, "a") is not None)
    assert not three.hub.drop(CLUSTER, "a", "this node was removed")  # not held at relay 3
    await until(lambda: a.pump.ended is not None)
    await until(lambda: not b.online("a") and three.hub.route(CLUSTER, "a") is None)


async def test_a_node_that_moves_is_found_at_its_new_relay(relays: list[Relay]) -> None:
    one, two, three = relays
    a = one.node("a")
    c = three.node("c")
    await until(lambda: c.online("a") and c.pump.can_open_stream())
    # A stream C keeps open to A through relay 1 (as an end-to-end channel is kept).
    kept = c.pump.open_stream(RequestHead("POST", "/kept", (), node="a"), end_stream=False)
    await until(lambda: one.hub.streams_piped == 1)
    a.memory.silence()  # A's tunnel to relay 1 goes dead without a goodbye; A joins relay 2
    two.node("a")
    await until(lambda: (r := three.hub.route(CLUSTER, "a")) is not None and r.via == "r2")
    await until(lambda: c.online("a"))  # its new relay announced it
    # The kept stream cannot reach A any more: it is cut now, not when relay 1 notices.
    await until(lambda: kept.reset_info is not None)
    assert kept.reset_info is not None and "moved" in kept.reset_info.message


async def test_a_relay_that_leaves_takes_its_nodes_off_every_directory(
    relays: list[Relay],
) -> None:
    one, two, _ = relays
    one.node("a")
    b = two.node("b")
    await until(lambda: b.online("a"))
    await one.mesh.close()
    await until(lambda: not b.online("a") and two.hub.route(CLUSTER, "a") is None)


async def test_a_node_id_bound_at_one_relay_is_refused_without_a_proof_at_another(
    relays: list[Relay],
) -> None:
    one, two, _ = relays
    one.node("a", proven=True)  # joined with its certificate: its id is bound to its key
    await until(lambda: (CLUSTER, "a") in two.hub.bound)
    impostor = two.node("a")  # the token alone, claiming A's id at relay 2
    await until(lambda: impostor.pump.ended is not None)
    assert two.hub.refused_ids == 1 and two.hub.link(CLUSTER, "a") is None
    route = two.hub.route(CLUSTER, "a")
    assert route is not None and route.via == "r1"  # A is still reached where it is


async def test_a_stream_to_a_relay_that_died_is_refused_at_once_and_its_nodes_forgotten() -> None:
    """Relay 1 is killed (no goodbye): a stream relay 3 hands it is refused within a probe
    (NATS: no responders), long before relay 1 would expire (15 s here), so the caller can
    try another holder; relay 1's node leaves relay 3's directory, relay 2's stays."""
    nats = MemoryNats()
    buses = [nats.client() for _ in range(3)]
    made = []
    for n, bus in enumerate(buses):
        mesh = Mesh(Hub(ping_interval=5.0), bus, prefix="t", relay_id=f"r{n + 1}", alive_every=5.0)
        await mesh.start()
        made.append(Relay(mesh.hub, mesh))
    one, two, three = made
    try:
        one.node("a")
        two.node("c")
        await until(lambda: None not in (three.hub.route(CLUSTER, n) for n in ("a", "c")))
        route = three.hub.route(CLUSTER, "a")
        assert route is not None and route.via == "r1"
        await until(route.pump.can_open_stream)
        await buses[0].kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        local = three.hub.open_local(route, HEAD, end_stream=False)
        await local.send_body(b"to a dead relay")
        with pytest.raises(StreamRefused, match="relay r1 is gone"):
            await local.response
        assert loop.time() - started < 2.0
        assert three.hub.route(CLUSTER, "a") is None
        assert three.hub.route(CLUSTER, "c") is not None
        assert "r1" not in three.mesh.directory.relays()
        with pytest.raises(StreamRefused):  # no stream is handed to it any more
            three.hub.open_local(route, HEAD, end_stream=True)
    finally:
        for relay in made:
            for node in relay.nodes:
                await node.stop()
            await relay.mesh.close()


async def test_a_node_cannot_name_the_relay_certificate_another_node_trusts(
    relays: list[Relay],
) -> None:
    """Only a relay names the certificate a node trusts for a hop (``relay.hop``): a stream a
    node opens loses that header, on its own relay and across the mesh."""
    one, two, _ = relays
    heads: list[RequestHead] = []

    async def capture(stream: TunnelStream) -> None:
        heads.append(stream.head)
        await echo(stream)

    one.node("a", serve=capture)
    b = one.node("b")
    c = two.node("c")
    named = RequestHead("POST", HOP_PATH, ((RELAY_CERT_HEADER, "mine"), ("X-Kept", "1")), node="a")
    for opener in (b, c):

        def ready(opener: Node = opener) -> bool:
            return opener.online("a") and opener.pump.can_open_stream()

        await until(ready)
        stream = opener.pump.open_stream(named, end_stream=True)
        assert (await stream.response()).status == 200
        await read_all(stream)
    assert len(heads) == 2
    for head in heads:
        names = [k.lower() for k, _ in head.headers]
        assert RELAY_CERT_HEADER.lower() not in names and "x-kept" in names
