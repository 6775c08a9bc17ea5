"""Presence with an injected clock: online, offline after 60 s of silence and never routed to
after; the relay's public /v1 routes only within the key's cluster and records usage once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.store import Cluster
from tests.control.harness import ADMIN, FakeClock, InProcessRelay, ServingNode
from tests.harness import wait_for


@dataclass
class World:
    relay: InProcessRelay
    clock: FakeClock
    http: aiohttp.ClientSession
    home: Cluster
    home_token: str
    away_token: str
    key: str

    async def chat(self, model: str = "m", key: str | None = None) -> aiohttp.ClientResponse:
        resp = await self.http.post(
            self.relay.http + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key or self.key}"},
        )
        await resp.read()
        return resp

    async def nodes(self) -> list[dict[str, Any]]:
        async with self.http.get(
            self.relay.http + "/api/v1/nodes",
            params={"cluster": "home"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as resp:
            assert resp.status == 200
            data: list[dict[str, Any]] = (await resp.json())["data"]
            return data


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    relay = await InProcessRelay(tmp_path, clock).start()
    home, home_token = relay.store.create_cluster("home", now=clock())
    _, away_token = relay.store.create_cluster("away", now=clock())
    _, key = relay.store.create_key(home.id, name="app", models=None, expires_at=None, now=clock())
    async with aiohttp.ClientSession() as http:
        yield World(relay, clock, http, home, home_token, away_token, key)
    await relay.close()


async def test_online_offline_after_60_s_and_never_routed_to_after(world: World) -> None:
    async with ServingNode(world.relay.url, world.home_token, "n1") as node:
        await node.heartbeat([("m", "llm")], name="studio")

        async def listed() -> bool:
            return [n["online"] for n in await world.nodes()] == [True]

        await wait_for(listed, 5)
        (entry,) = await world.nodes()
        assert (entry["name"], entry["connected"], entry["models"][0]["id"]) == (
            "studio",
            True,
            "m",
        )
        resp = await world.chat()
        assert resp.status == 200
        assert resp.headers["X-Quorum-Route"] == "relay"
        assert resp.headers["X-Quorum-Node"] == "n1"
        assert node.served == ["/v1/chat/completions"]

        world.clock.now += 59.9
        assert (await world.chat()).status == 200
        world.clock.now += 0.1  # 60 s of silence
        assert [n["online"] for n in await world.nodes()] == [False]
        resp = await world.chat()
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "no_reachable_holder"
        assert len(node.served) == 2  # never routed to after

        await node.heartbeat([("m", "llm")], name="studio")
        await wait_for(listed, 5)
        assert (await world.chat()).status == 200
        assert len(node.served) == 3


async def test_models_and_errors_of_the_public_endpoint(world: World) -> None:
    limited = world.relay.store.create_key(
        world.home.id, name="only-m", models=("m",), expires_at=None, now=world.clock()
    )[1]
    async with ServingNode(world.relay.url, world.home_token, "n1") as node:
        await node.heartbeat([("m", "llm"), ("e", "embedding")])
        await wait_for(lambda: _has_link(world), 5)
        unknown = await world.chat("nope")
        assert unknown.status == 404
        assert (await unknown.json())["error"]["code"] == "model_not_found"
        refused = await world.chat("e", key=limited)
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "model_not_allowed"
        assert (await world.chat("m", key=limited)).status == 200
        wrong_type = await world.chat("e")  # an embedding model asked for a chat
        assert wrong_type.status == 404
        async with world.http.get(
            world.relay.http + "/v1/models", headers={"Authorization": f"Bearer {limited}"}
        ) as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["m"]
        async with world.http.get(
            world.relay.http + "/v1/models", headers={"Authorization": f"Bearer {world.key}"}
        ) as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["e", "m"]
        assert node.served == ["/v1/chat/completions"]


async def _has_link(world: World) -> bool:
    return any(link.presence for link in world.relay.hub.nodes(world.home.id))


async def test_a_key_never_reaches_another_clusters_node(world: World) -> None:
    async with ServingNode(world.relay.url, world.away_token, "far") as far:
        await far.heartbeat([("m", "llm")])
        await wait_for(lambda: _any_link(world), 5)
        resp = await world.chat()
        assert resp.status == 404  # home has no such model; away's node is invisible
        async with world.http.get(
            world.relay.http + "/v1/models", headers={"Authorization": f"Bearer {world.key}"}
        ) as models:
            assert (await models.json())["data"] == []
        assert far.served == []


async def _any_link(world: World) -> bool:
    return any(link.presence for link in world.relay.hub.nodes())


async def test_usage_of_relay_served_requests_is_recorded_once(world: World) -> None:
    async with ServingNode(world.relay.url, world.home_token, "n1") as node:
        await node.heartbeat([("m", "llm")])
        await wait_for(lambda: _has_link(world), 5)
        ids = []
        for _ in range(3):
            resp = await world.chat()
            assert resp.status == 200
            ids.append(resp.headers["X-Request-Id"])
        assert (await world.chat("nope")).status == 404

        async def recorded() -> bool:
            return len(world.relay.store.usage_records(world.home.id)) == 4

        await wait_for(recorded, 5)
    records = {r.request_id: r for r in world.relay.store.usage_records(world.home.id)}
    for rid in ids:
        r = records[rid]
        assert (r.route, r.node, r.endpoint, r.status) == ("relay", "n1", "chat", 200)
        assert (r.prompt_tokens, r.completion_tokens) == (2, 3)
        assert r.key_id is not None and r.ttfb_ms is not None
    (missing,) = [r for r in records.values() if r.status == 404]
    assert missing.error == "model_not_found"
    assert node.served == ["/v1/chat/completions"] * 3
