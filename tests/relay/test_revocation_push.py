"""Revocations reach the nodes at once, and a disabled owner's clusters stop being served:
real relay processes (one on SQLite; two sharing PostgreSQL and NATS), real nodes.

Each node's key cache is set to an hour here, so a key refused after a revocation can only
have been refused because the relay told the node (REVOCATION), never because the cache ran
out by itself.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from quorum.app import Node
from quorum.server.app import build_app
from quorum.server.middleware import Handler
from relay.open_store import open_store
from relay.store import Store
from relay.user_ops import UserOps
from tests.fakes import FakeOllama, LoopThread
from tests.harness import free_port, node_config, start_node, timeout
from tests.postgres import fresh_schema
from tests.relay.harness import Relay
from tests.relay.test_relay_e2e import wait_until

NATS = "nats://127.0.0.1:4222"
CHAT = "/v1/chat/completions"
MODEL = "llama3.2:1b"
HOUR = 3600.0


def users_relay(tmp: Path, n: int, *shared: str) -> Relay:
    """A relay with users (a GitHub sign-in nobody uses here), and its admin token."""
    data = tmp / f"relay{n}"
    data.mkdir()
    port = free_port()
    secret = tmp / "github.secret"
    secret.write_text("s3cret\n")
    config = tmp / f"relay{n}.yaml"
    provider = {
        "name": "github",
        "github": True,
        "client_id": "id",
        "client_secret_file": str(secret),
        "github_url": "http://127.0.0.1:9",
        "github_api_url": "http://127.0.0.1:9",
    }
    users = {"public_url": f"http://127.0.0.1:{port}", "providers": [provider]}
    config.write_text(yaml.safe_dump({"users": users}))
    return Relay(data, port, "--config", str(config), *shared)


class World:
    """An operator, an owner and a member; the owner's cluster "home" with node A (a model,
    and a front door whose clients look like the LAN) on the first relay and node B on the
    last; the member's API key."""

    def __init__(self, bg: LoopThread, tmp: Path, relays: int, store_url: str | None) -> None:
        self.bg = bg
        shared: tuple[str, ...] = ()
        if store_url is not None:
            shared = ("--store", store_url, "--nats", NATS, "--nats-prefix", uuid.uuid4().hex)
        self.relays = [users_relay(tmp, n, *shared) for n in range(relays)]
        self.store: Store = open_store(self.relays[0].data, store_url)
        now = time.time()
        self.op = self.store.sign_up("github", "1", name="op", email=None, operator=True, now=now)
        owner = self.store.sign_up("github", "2", name="own", email=None, operator=False, now=now)
        member = self.store.sign_up("github", "3", name="mem", email=None, operator=False, now=now)
        self.owner_id, self.member_id = owner.id, member.id
        owners = UserOps(self.store, time.time, owner)
        token = owners.create_cluster("home")["token"]
        members = UserOps(self.store, time.time, member)
        members.accept(owners.invite("home")["code"])
        self.key = members.create_key("home", "phone")["key"]
        self.owner_key = owners.create_key("home", "laptop")["key"]
        for relay in self.relays:
            relay.start()
        self.engine = FakeOllama(models=[MODEL])
        engine_url = bg.run(self.engine.start())
        urls = [r.url for r in self.relays]

        def node(name: str, first: int, services: list[dict[str, Any]]) -> Node:
            config = node_config(
                tmp / name,
                node={"name": name},
                cluster={"token": token},
                relay={"url": urls[first], "urls": urls[first + 1 :] + urls[:first]},
                discovery={"enabled": False},
                services=services,
            )
            started = bg.run(start_node(config))
            assert started.ctx.keys is not None
            started.ctx.keys._ttl = HOUR  # only a REVOCATION can end a good answer early
            return started

        self.a = node("node-a", 0, [{"name": "ollama", "url": engine_url}])
        self.b = node("node-b", len(self.relays) - 1, [])
        self.runner = web.AppRunner(self._lan_app(self.a))
        self.lan_port = bg.run(self._serve())

    @staticmethod
    def _lan_app(node: Node) -> web.Application:
        @web.middleware
        async def from_lan(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request.clone(remote="192.0.2.44"))

        app = build_app(node.ctx)
        app.middlewares.insert(0, from_lan)
        return app

    async def _serve(self) -> int:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return int(self.runner.addresses[0][1])

    def admin(self, relay: int, method: str, path: str) -> dict[str, Any]:
        """Call relay ``relay``'s control plane with its admin token."""
        token = (self.relays[relay].data / "admin_token").read_text().strip()
        body = None if method == "GET" else b"{}"
        req = urllib.request.Request(self.relays[relay].http + path, method=method, data=body)
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            answer: dict[str, Any] = json.load(resp)
            return answer

    def at_node(self, key: str) -> int:
        """A chat with ``key`` at node A's LAN front door: its status."""
        return _post(f"http://127.0.0.1:{self.lan_port}{CHAT}", key)[0]

    def at_relay(self, relay: int, key: str) -> tuple[int, dict[str, Any]]:
        """A chat with ``key`` at relay ``relay``'s public /v1."""
        return _post(self.relays[relay].http + CHAT, key)

    def close(self) -> None:
        self.bg.run(self.runner.cleanup())
        for n in (self.a, self.b):
            self.bg.run(n.stop())
        self.bg.run(self.engine.stop())
        for relay in self.relays:
            relay.kill()
        self.store.close()


def _post(url: str, key: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout(20)) as resp:
            return int(resp.status), json.load(resp)
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), json.load(err)


def connected(node: Node) -> bool:
    assert node.ctx.tunnel is not None
    return node.ctx.tunnel.status.connected


@pytest.fixture
def one(bg: LoopThread, tmp_path: Path) -> Iterator[World]:
    world = World(bg, tmp_path, 1, None)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def two(bg: LoopThread, tmp_path: Path) -> Iterator[World]:
    with fresh_schema() as url:
        world = World(bg, tmp_path, 2, url)
        try:
            yield world
        finally:
            world.close()


def test_a_revoked_key_fails_at_the_node_on_the_very_next_request(one: World) -> None:
    assert one.at_node(one.key) == 200
    assert one.at_node(one.owner_key) == 200  # both answers cached for an hour now
    prefix = one.key.split("_")[1]
    assert one.admin(0, "DELETE", f"/api/v1/keys/qk_{prefix}")["state"] == "revoked"
    assert one.at_node(one.key) == 401
    assert one.at_node(one.owner_key) == 200  # checked again, and still good


def test_a_disabled_user_and_a_removed_member_stop_at_the_node_at_once(one: World) -> None:
    store = one.store
    members = UserOps(store, time.time, store.user(one.member_id))  # type: ignore[arg-type]
    second = members.create_key("home", "tablet")["key"]
    assert one.at_node(second) == 200
    one.admin(0, "POST", f"/api/v1/users/{one.member_id}/disable")
    assert one.at_node(second) == 401
    one.admin(0, "POST", f"/api/v1/users/{one.member_id}/enable")
    assert one.at_node(second) == 200  # the refusal was not kept either
    one.admin(0, "DELETE", f"/api/v1/clusters/home/members/{one.member_id}")
    assert one.at_node(second) == 401


def test_a_disabled_owner_s_cluster_is_not_served_until_enabled(one: World) -> None:
    wait_until(lambda: connected(one.a) and connected(one.b), 15, "both nodes on the relay")
    assert one.at_relay(0, one.key)[0] == 200
    one.admin(0, "POST", f"/api/v1/users/{one.owner_id}/disable")
    wait_until(lambda: not connected(one.a) and not connected(one.b), 5, "tunnels closed")
    assert [c["suspended"] for c in one.admin(0, "GET", "/api/v1/clusters")["data"]] == [True]
    status, body = one.at_relay(0, one.key)
    assert status == 403 and body["error"]["code"] == "cluster_suspended", body
    assert "owner's account is disabled" in body["error"]["message"]
    assert one.at_node(one.key) == 401  # the relay no longer vouches for its keys either
    # The nodes keep trying (a 503, not a 403 that would stop them), and are refused.
    wait_until(
        lambda: "503" in (one.a.ctx.tunnel.status.last_error or ""),  # type: ignore[union-attr]
        10,
        "a refused reconnection",
    )
    assert "refused a node of suspended cluster home" in one.relays[0].log.read_text()
    assert not connected(one.a)

    one.admin(0, "POST", f"/api/v1/users/{one.owner_id}/enable")
    assert [c["suspended"] for c in one.admin(0, "GET", "/api/v1/clusters")["data"]] == [False]
    wait_until(lambda: connected(one.a), 40, "node A back after the owner is enabled")
    wait_until(lambda: one.at_relay(0, one.key)[0] == 200, 20, "the member's key served again")
    assert one.at_node(one.key) == 200


def test_several_relays_a_revocation_and_a_suspension_reach_every_relay(two: World) -> None:
    wait_until(lambda: connected(two.a) and connected(two.b), 15, "both nodes on their relays")
    assert two.a.ctx.tunnel is not None and two.b.ctx.tunnel is not None
    assert two.a.ctx.tunnel.relay_url == two.relays[0].url
    assert two.b.ctx.tunnel.relay_url == two.relays[1].url
    assert two.at_node(two.key) == 200
    # Revoked at relay 2: node A, on relay 1, hears it through the mesh.
    prefix = two.key.split("_")[1]
    two.admin(1, "DELETE", f"/api/v1/keys/qk_{prefix}")
    wait_until(lambda: two.at_node(two.key) == 401, 10, "the revocation at node A")

    # The owner disabled at relay 2: node A's tunnel at relay 1 closes too.
    two.admin(1, "POST", f"/api/v1/users/{two.owner_id}/disable")
    wait_until(lambda: not connected(two.a) and not connected(two.b), 5, "both tunnels closed")
    assert "owner is disabled" in two.relays[0].log.read_text()
    assert two.at_relay(0, two.owner_key)[0] == 401  # the owner's own key: a disabled user's
    two.admin(1, "POST", f"/api/v1/users/{two.owner_id}/enable")
    wait_until(lambda: connected(two.a) and connected(two.b), 40, "both nodes back")
