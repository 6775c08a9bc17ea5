"""Users of a relay, end to end: a real OpenID Connect provider (panva's oidc-provider on
loopback), a real relay process, a real Chromium, real nodes, the ``openai`` SDK.

Alice signs in (the first user: operator), creates a cluster and a key on the dashboard, a
node joins with the cluster's token, and the SDK uses the key against the relay's ``/v1``.
Bob signs in the same way and learns nothing of hers, on any page or endpoint, until she
invites him; removed, his key stops at the next request; disabled, so do his session,
personal token and keys.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from quorum.app import Node
from tests.fakes import FakeEngine, FakeOllama, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.oidc.harness import OidcServer, users_relay
from tests.relay.harness import Relay, free_port

pytestmark = pytest.mark.browser

ALICE_MODEL = "alice-llama:1b"
BOB_MODEL = "bob-qwen:0.5b"


@dataclass
class World:
    relay: Relay
    oidc: OidcServer
    bg: LoopThread
    tmp: Path
    fakes: list[FakeEngine] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str, token: str, model: str) -> Node:
        fake = FakeOllama(models=[model])
        self.fakes.append(fake)
        url = self.bg.run(fake.start())
        config = node_config(
            self.tmp / name,
            node={"name": name},
            cluster={"token": token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=[{"name": "ollama", "url": url, "engine": "ollama"}],
        )
        made = self.bg.run(start_node(config))
        self.nodes.append(made)
        return made

    def api(self, path: str, token: str, body: Any = None, method: str | None = None) -> Any:
        """``/api`` with a personal token: (status, JSON)."""
        request = urllib.request.Request(
            self.relay.http + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method or ("GET" if body is None else "POST"),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout(10)) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.relay.http + "/v1", api_key=key, max_retries=0, timeout=timeout(30)
        )


@pytest.fixture(scope="module")
def world(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("users")
    port = free_port()
    oidc = OidcServer(tmp, [f"http://127.0.0.1:{port}/dashboard/signin/test-id/callback"])
    oidc.start()
    relay = users_relay(
        tmp,
        [
            {
                "name": "test-id",
                "label": "Test ID",
                "issuer": oidc.issuer,
                "client_id": oidc.client_id,
                "secret": oidc.client_secret,
            }
        ],
        port,
    )
    made = World(relay, oidc, bg, tmp)
    try:
        relay.start()
        yield made
    finally:
        for node in made.nodes:
            with contextlib.suppress(Exception):
                bg.run(node.stop())
        for fake in made.fakes:
            with contextlib.suppress(Exception):
                bg.run(fake.stop())
        relay.kill()
        oidc.stop()


@contextlib.contextmanager
def person(browser: Browser, world: World, login: str) -> Iterator[tuple[Page, list[str]]]:
    """A browser of its own, signed in as ``login`` through the provider's pages; errors the
    relay's pages report are kept (the provider's own pages load a web font they cannot)."""
    context: BrowserContext = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(timeout(15) * 1000)
    problems: list[str] = []
    page = context.new_page()

    def seen(text: str) -> None:
        if page.url.startswith(world.relay.http):
            problems.append(text)

    page.on("console", lambda m: seen(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen(str(e)))
    try:
        page.goto(world.relay.http + "/")
        expect(page).to_have_title("Sign in · Quorum relay")
        page.get_by_role("link", name="Sign in with Test ID").click()
        page.locator('input[name="login"]').fill(login)
        page.locator('input[name="password"]').fill("any password")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_title("Fleet · Quorum relay")
        expect(page.locator("#live")).to_have_text("live")
        yield page, problems
    finally:
        context.close()


def go(page: Page, name: str) -> None:
    page.locator(f'#tabs a[data-page="{name}"]').click()
    expect(page.locator(f"#page-{name}")).to_be_visible()


def personal_token(page: Page, name: str) -> str:
    go(page, "account")
    page.locator("#token-name").fill(name)
    page.locator("#token-create").click()
    shown = page.locator("#token-shown")
    expect(shown).to_have_text(re.compile(r"^qu_[0-9a-f]{8}_\S{20,}$"))
    token = shown.inner_text()
    page.locator("#token-done").click()
    return token


def make_key(page: Page, cluster: str, name: str) -> str:
    go(page, "keys")
    page.locator("#key-cluster").select_option(label=cluster)
    page.locator("#key-name").fill(name)
    page.locator("#key-create").click()
    shown = page.locator("#created-key")
    expect(shown).to_have_text(re.compile(r"^qk_[0-9a-f]{8}_\S{20,}$"))
    key = shown.inner_text()
    page.locator("#created-done").click()
    return key


def chat(client: openai.OpenAI, model: str, text: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return answer.choices[0].message.content or ""


def test_alice_signs_in_makes_a_cluster_and_a_key_and_the_sdk_uses_it(
    world: World, browser: Browser
) -> None:
    with person(browser, world, "alice") as (page, problems):
        (session,) = [c for c in page.context.cookies() if c["name"] == "quorum_relay_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""
        go(page, "account")
        expect(page.locator("#me")).to_contain_text("Alice Liddell")
        expect(page.locator("#me")).to_contain_text("operator")  # the first user

        go(page, "clusters")
        page.locator("#cluster-name").fill("wonderland")
        page.locator("#cluster-create").click()
        expect(page.locator("#cluster-token")).to_have_text(re.compile(r"^qc_\S{20,}$"))
        join = page.locator("#cluster-token").inner_text()
        page.locator("#cluster-done").click()
        expect(page.locator("#clusters")).to_contain_text("wonderland")
        world.node("rabbit-hole", join, ALICE_MODEL)
        go(page, "fleet")
        expect(page.locator("#fleet")).to_contain_text("rabbit-hole", timeout=timeout(15) * 1000)
        expect(page.locator("#fleet tbody tr", has_text="rabbit-hole")).to_contain_text("online")

        key = make_key(page, "wonderland", "tea party")
        with world.client(key) as client:
            assert chat(client, ALICE_MODEL, "curiouser") == "You said: curiouser"
        go(page, "usage")
        expect(page.locator("#recent tbody tr").first).to_contain_text(ALICE_MODEL)
        world.facts.update(alice_key=key, alice_token=personal_token(page, "alice cli"))
        assert not problems, problems
