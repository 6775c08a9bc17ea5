"""API keys at a node: a client on another machine uses its key at any node of the cluster."""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from quorum.app import Node
from quorum.server.app import build_app
from quorum.server.middleware import Handler
from tests.fakes import FakeOllama, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli

CHAT = "/v1/chat/completions"


class Site:
    """Node A behind a relay, plus a second front door whose clients look like the LAN."""

    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg, self.tmp = bg, tmp
        (tmp / "relay").mkdir()
        self.token = create_cluster(tmp / "relay", "home")
        self.relay = Relay(tmp / "relay").start()
        self.engine = FakeOllama(models=["llama3.2:1b", "qwen3:0.6b"])
        url = bg.run(self.engine.start())
        config = node_config(
            tmp / "a",
            cluster={"token": self.token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=[{"name": "ollama", "url": url}],
        )
        self.node: Node = bg.run(start_node(config))

        @web.middleware
        async def from_lan(request: web.Request, handler: Handler) -> web.StreamResponse:
            # Its clients look like LAN machines (one address each, chosen by the test).
            remote = request.headers.get("X-Test-Remote", "192.0.2.44")
            return await handler(request.clone(remote=remote))

        app = build_app(self.node.ctx)
        app.middlewares.insert(0, from_lan)
        self.runner = web.AppRunner(app)

        async def serve() -> int:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        self.lan_port = bg.run(serve())

    def key(self, *args: str) -> str:
        out = relay_cli(self.tmp / "relay", "key", "create", "--cluster", "home", *args)
        match = re.search(r"qk_[0-9a-f]{8}_\S+", out)
        assert match, out
        return match.group(0)

    def call(self, key: str, model: str = "llama3.2:1b", remote: str | None = None) -> int:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.lan_port}{CHAT}", data=body.encode(), method="POST"
        )
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {key}")
        if remote is not None:
            req.add_header("X-Test-Remote", remote)
        try:
            with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code)

    def close(self) -> None:
        self.bg.run(self.runner.cleanup())
        self.bg.run(self.node.stop())
        self.bg.run(self.engine.stop())
        self.relay.kill()


@pytest.fixture
def site(bg: LoopThread, tmp_path: Path) -> Iterator[Site]:
    s = Site(bg, tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_a_key_works_at_a_node_and_revocation_reaches_it(site: Site) -> None:
    key = site.key("--name", "phone")
    assert site.call(key) == 200
    assert site.call("qk_00000000_not-a-real-key") == 401
    revoked = time.monotonic()
    relay_cli(site.tmp / "relay", "key", "revoke", key.split("_")[1])
    # The node's cache of the relay's answer (3 s) runs out by itself: no restart, no flush.
    deadline = revoked + timeout(10)
    while site.call(key) == 200:
        assert time.monotonic() < deadline, "the revoked key still works at the node"
        time.sleep(0.2)
    assert site.call(key) == 401
    print(f"revoked key refused at the node {time.monotonic() - revoked:.1f} s after revoking")


def test_a_model_limited_key_is_refused_other_models(site: Site) -> None:
    key = site.key("--models", "llama3.2:1b")
    assert site.call(key) == 200
    assert site.call(key, model="qwen3:0.6b") == 403


def test_a_limited_key_lists_only_its_models(site: Site) -> None:
    key = site.key("--models", "llama3.2:1b")
    req = urllib.request.Request(f"http://127.0.0.1:{site.lan_port}/v1/models")
    req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
        ids = [m["id"] for m in json.load(resp)["data"]]
    assert ids == ["llama3.2:1b"]  # qwen3:0.6b is there too, but not for this key


def _get(site: Site, path: str, key: str) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{site.lan_port}{path}")
    req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), err.read()


def test_a_key_reads_nothing_of_the_inventory(site: Site) -> None:
    """Services, addresses, peers and recent requests are the operator's, not a key's."""
    key = site.key("--models", "llama3.2:1b")
    for path in ("/quorum/v1/status", "/quorum/v1/local", "/metrics", "/", "/quorum/v1/events"):
        status, body = _get(site, path, key)
        assert status == 403, (path, body[:200])
        assert json.loads(body)["error"]["code"] == "key_not_allowed"
    status, body = _get(site, "/v1/models/qwen3:0.6b", key)
    assert status == 404  # another model exists, but not for this key
    status, body = _get(site, "/v1/models/llama3.2:1b", key)
    assert status == 200
    assert set(json.loads(body)) <= {"id", "object", "created", "owned_by"}
    status, body = _get(site, "/v1/models", key)
    (model,) = json.loads(body)["data"]
    assert "quorum" not in model  # no node names, routes or services


def test_a_flood_of_made_up_keys_blocks_only_its_sender(site: Site) -> None:
    """One LAN address sends hundreds of random keys: it is slowed down (429); another
    client's good key keeps working, and the relay is asked a bounded number of times."""
    good = site.key("--name", "laptop")
    assert site.node.ctx.keys is not None
    statuses = [
        site.call(f"qk_{i:08x}_{secrets.token_urlsafe(30)}", remote="192.0.2.66")
        for i in range(150)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429
    assert set(statuses) == {401, 429}
    assert site.node.ctx.keys.relay_calls < 40  # not one relay call per made-up key
    assert site.call(good, remote="192.0.2.67") == 200
    assert site.call(good, remote="192.0.2.66") == 200  # even from the flooding address


def test_a_key_sent_as_x_api_key_works_like_a_bearer(site: Site) -> None:
    """Anthropic's SDKs send their key in x-api-key."""
    key = site.key("--name", "claude")
    body = json.dumps({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(
        f"http://127.0.0.1:{site.lan_port}{CHAT}", data=body.encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    req.add_header("x-api-key", key)
    with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
        assert resp.status == 200
    req.remove_header("X-api-key")
    req.add_header("x-api-key", "qk_00000000_" + "n" * 40)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=timeout(10))
    assert refused.value.code == 401
    refused.value.close()
