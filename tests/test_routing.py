from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.config import EngineKind, ServiceType
from quorum.errors import ModelNotFound, NoReachableHolder
from quorum.fleet import (
    FleetSnapshot,
    Holder,
    LocalHoldersChanged,
    PeerGone,
    PeerHoldersChanged,
    Route,
    apply,
)
from quorum.routing import ENDPOINTS, RouteRequest, choose


def holder(
    model: str,
    type_: ServiceType = ServiceType.LLM,
    *,
    node: str = "a",
    route: Route = Route.LOCAL,
    service: str = "svc",
    loaded: bool | None = None,
    online: bool = True,
) -> Holder:
    return Holder(
        model=model,
        type=type_,
        node_id=f"id-{node}",
        node_name=node,
        route=route,
        service=service,
        engine=EngineKind.OPENAI,
        url=f"http://{node}",
        upstream_model=model,
        loaded=loaded,
        online=online,
    )


def snap(*holders: Holder) -> FleetSnapshot:
    return FleetSnapshot("id-a", "a", holders)


def req(model: str, path: str = "/v1/chat/completions", forwarded: bool = False) -> RouteRequest:
    e = ENDPOINTS[path]
    return RouteRequest(model, e.types, e.label, forwarded)


def test_type_decides_even_when_names_collide() -> None:
    chat = holder("whisper", service="llm-svc")
    stt = holder("whisper", ServiceType.STT, service="stt-svc")
    s = snap(chat, stt)
    assert choose(s, req("whisper", "/v1/audio/transcriptions")) == (stt,)
    assert choose(s, req("whisper")) == (chat,)


def test_wrong_type_is_404_naming_the_type() -> None:
    with pytest.raises(ModelNotFound, match="is a stt model; a chat needs a llm model"):
        choose(snap(holder("w", ServiceType.STT)), req("w"))


def test_embeddings_accept_embedding_and_llm_services() -> None:
    emb = holder("e", ServiceType.EMBEDDING)
    assert choose(snap(emb), req("e", "/v1/embeddings")) == (emb,)
    llm = holder("l")
    assert choose(snap(llm), req("l", "/v1/embeddings")) == (llm,)


def test_names_match_exactly() -> None:
    s = snap(holder("Llama3"))
    with pytest.raises(ModelNotFound):
        choose(s, req("llama3"))


def test_known_but_offline_is_503() -> None:
    with pytest.raises(NoReachableHolder, match="svc@a"):
        choose(snap(holder("m", online=False)), req("m"))


def test_order_loaded_then_route_then_name() -> None:
    # Issue 6: a holder with the model loaded goes before one that must load it,
    # whatever the route; the route decides between equally loaded holders.
    relay = holder("m", node="r", route=Route.RELAY, loaded=True)
    lan_cold = holder("m", node="b", route=Route.LAN, loaded=False)
    lan_warm = holder("m", node="c", route=Route.LAN, loaded=True)
    local = holder("m", node="a", loaded=False)
    assert choose(snap(relay, lan_cold, lan_warm, local), req("m")) == (
        lan_warm,
        relay,
        local,
        lan_cold,
    )


def test_forwarded_request_only_served_locally() -> None:
    lan = holder("m", node="b", route=Route.LAN)
    with pytest.raises(ModelNotFound):
        choose(snap(lan), req("m", forwarded=True))
    local = holder("m")
    assert choose(snap(lan, local), req("m", forwarded=True)) == (local,)


def test_apply_replaces_a_nodes_holders_whole() -> None:
    s = snap()
    s = apply(s, LocalHoldersChanged((holder("x"), holder("y"))))
    peer = holder("z", node="b", route=Route.LAN)
    s = apply(s, PeerHoldersChanged("id-b", (peer,)))
    s2 = apply(s, LocalHoldersChanged((holder("y"),)))
    assert sorted(s2.by_model) == ["y", "z"]
    assert sorted(s.by_model) == ["x", "y", "z"]  # the old snapshot is untouched
    assert sorted(apply(s2, PeerGone("id-b")).by_model) == ["y"]


def test_routes_of_one_peer_are_independent() -> None:
    lan = holder("m", node="b", route=Route.LAN)
    relay = holder("m", node="b", route=Route.RELAY)
    s = apply(snap(), PeerHoldersChanged("id-b", (lan,), Route.LAN))
    s = apply(s, PeerHoldersChanged("id-b", (relay,), Route.RELAY))
    assert choose(s, req("m")) == (lan, relay)  # the LAN is preferred
    s = apply(s, PeerGone("id-b", Route.LAN))
    assert choose(s, req("m")) == (relay,)


routes = st.sampled_from(list(Route))
types = st.sampled_from(list(ServiceType))
holders = st.builds(
    holder,
    st.sampled_from(["m1", "m2", "m3"]),
    types,
    node=st.sampled_from(["a", "b", "c"]),
    route=routes,
    service=st.sampled_from(["s1", "s2"]),
    loaded=st.sampled_from([True, False, None]),
    online=st.booleans(),
)


@given(st.lists(holders, max_size=12), st.sampled_from(sorted(ENDPOINTS)), st.booleans())
def test_choose_properties(hs: list[Holder], path: str, forwarded: bool) -> None:
    s = snap(*hs)
    request = req("m1", path, forwarded)
    try:
        picked = choose(s, request)
    except (ModelNotFound, NoReachableHolder):
        eligible = [
            h
            for h in hs
            if h.model == "m1"
            and h.type in request.types
            and h.online
            and (not forwarded or h.route is Route.LOCAL)
        ]
        assert not eligible
        return
    assert picked
    assert all(h.model == "m1" and h.type in request.types and h.online for h in picked)
    assert choose(snap(*reversed(hs)), request) == picked  # deterministic for a snapshot
    keys = [(h.loaded is False, list(Route).index(h.route)) for h in picked]
    assert keys == sorted(keys)
