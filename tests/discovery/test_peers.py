"""PeerTracker without sockets: an in-memory fetch, a fake clock, real presence rules."""

from __future__ import annotations

import asyncio

import pytest

from quorum.config import EngineKind, ServiceType
from quorum.discovery import PROTOCOL_VERSION, Advert, PeerFound, PeerRemoved, PeerUpdated
from quorum.discovery.peers import PeerListing, PeerTracker, parse_listing
from quorum.errors import PeerError, PeerRefused
from quorum.fleet import FleetEvent, FleetSnapshot, PeerGone, Route, apply
from quorum.fleet.remote import peer_holders
from quorum.protocol import ModelInfo
from tests.harness import timeout


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peers:
    """What each address answers: a listing, refused, or silence (PeerError)."""

    def __init__(self) -> None:
        self.answers: dict[str, PeerListing | type[PeerError]] = {}
        self.calls: list[str] = []

    async def fetch(self, address: str, advert: Advert) -> PeerListing:
        self.calls.append(address)
        answer = self.answers.get(address, PeerRefused)
        if isinstance(answer, PeerListing):
            return answer
        raise answer("scripted")


def advert(node_id: str = "b1", digest: str = "0" * 16) -> Advert:
    return Advert(PROTOCOL_VERSION, node_id, "node-b", 32768, "f" * 8, "e" * 16, digest)


def listing(*models: str, node_id: str = "b1") -> PeerListing:
    return PeerListing(
        node_id,
        "node-b",
        tuple(
            ModelInfo(
                m, ServiceType.LLM.value, "ollama", engine=EngineKind.OLLAMA.value, loaded=True
            )
            for m in models
        ),
    )


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.peers = Peers()
        self.events: list[FleetEvent] = []
        self.snapshot = FleetSnapshot("a1", "node-a")
        self.tracker = PeerTracker(self.peers.fetch, self.on_event, clock=self.clock)

    def on_event(self, event: FleetEvent) -> None:
        self.events.append(event)
        self.snapshot = apply(self.snapshot, event)

    def models(self) -> set[str]:
        return set(self.snapshot.by_model)


async def settle(rig: Rig, want: set[str]) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(5)
    while rig.models() != want:
        assert asyncio.get_running_loop().time() < deadline, rig.models()
        await asyncio.sleep(0.01)


@pytest.fixture
async def rig() -> object:
    r = Rig()
    task = asyncio.create_task(r.tracker.run())
    yield r
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_found_peer_is_fetched_and_routed_over_lan(rig: Rig) -> None:
    rig.peers.answers["10.0.0.2"] = listing("llama3.2:1b")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2",)))
    await settle(rig, {"llama3.2:1b"})
    (h,) = rig.snapshot.holders
    assert (h.route, h.url, h.node_name, h.api_key) == (
        Route.LAN,
        "https://10.0.0.2:32768",  # mutual TLS: no token goes with a forwarded request
        "node-b",
        None,
    )
    (view,) = rig.tracker.views()
    assert view.online and view.models == ("llama3.2:1b",)


async def test_digest_change_refetches_at_once(rig: Rig) -> None:
    rig.peers.answers["10.0.0.2"] = listing("a")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2",)))
    await settle(rig, {"a"})
    rig.peers.answers["10.0.0.2"] = listing("a", "b")
    rig.tracker.handle(PeerUpdated(advert(digest="1" * 16), ("10.0.0.2",)))
    await settle(rig, {"a", "b"})


async def test_goodbye_removes_at_once(rig: Rig) -> None:
    rig.peers.answers["10.0.0.2"] = listing("a")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2",)))
    await settle(rig, {"a"})
    rig.tracker.handle(PeerRemoved("b1", "node-b"))
    assert rig.models() == set()
    assert isinstance(rig.events[-1], PeerGone)


async def test_silence_expires_after_the_window_and_refusal_at_once(rig: Rig) -> None:
    rig.peers.answers["10.0.0.2"] = listing("a")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2",)))
    await settle(rig, {"a"})
    rig.peers.answers["10.0.0.2"] = PeerError  # it stops answering, no refusal
    rig.clock.now += 59
    rig.tracker.handle(PeerUpdated(advert(), ("10.0.0.2",)))  # wake the loop
    await asyncio.sleep(0.05)
    assert rig.models() == {"a"}  # still inside the 60 s window
    rig.clock.now += 2
    rig.tracker.handle(PeerUpdated(advert(), ("10.0.0.2",)))
    await settle(rig, set())
    # It comes back; then its port is closed: refused takes it offline without waiting.
    rig.peers.answers["10.0.0.2"] = listing("a")
    rig.tracker.handle(PeerUpdated(advert(), ("10.0.0.2",)))
    await settle(rig, {"a"})
    rig.peers.answers["10.0.0.2"] = PeerRefused
    rig.tracker.handle(PeerUpdated(advert(), ("10.0.0.2",)))
    await settle(rig, set())


async def test_second_address_used_when_first_fails(rig: Rig) -> None:
    rig.peers.answers["10.0.0.9"] = listing("a")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2", "10.0.0.9")))
    await settle(rig, {"a"})
    assert rig.snapshot.holders[0].url == "https://10.0.0.9:32768"


async def test_a_peer_answering_as_another_node_is_ignored(rig: Rig) -> None:
    rig.peers.answers["10.0.0.2"] = listing("a", node_id="impostor")
    rig.tracker.handle(PeerFound(advert(), ("10.0.0.2",)))
    await asyncio.sleep(0.05)
    assert rig.models() == set()


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"node": {"id": "x", "name": "y"}, "models": [{"id": "m", "limit": -1}]}],
)
def test_malformed_listing(bad: object) -> None:
    with pytest.raises(PeerError):
        parse_listing(bad)


def test_a_newer_peers_unknown_model_type_is_left_out() -> None:
    listed = parse_listing(
        {
            "node": {"id": "x", "name": "y"},
            "models": [{"id": "m", "type": "video"}, {"id": "q", "type": "llm", "limit": 2}],
        }
    )
    holders = peer_holders("x", "y", Route.LAN, "http://h:1", listed.models)
    assert [(h.model, h.limit) for h in holders] == [("q", 2)]
