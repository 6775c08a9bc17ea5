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
from tests.harness import free_port, node_config, start_node, timeout
from tests.oidc.harness import OidcServer, users_relay
from tests.relay.harness import Relay
from tests.relay.test_relay_e2e import wait_until

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

    def online(self, name: str, token: str) -> bool:
        """Whether the node ``name`` is connected and heartbeating, as its owner sees it."""
        _, nodes = self.api("/api/v1/nodes", token)
        return any(n["name"] == name and n["online"] and n["connected"] for n in nodes["data"])

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


def through_the_provider(page: Page, world: World, login: str) -> None:
    """From the relay's sign-in page through the provider's login and consent, and back."""
    page.goto(world.relay.http + "/")
    expect(page).to_have_title("Sign in · Quorum relay")
    page.get_by_role("link", name="Sign in with Test ID").click()
    page.locator('input[name="login"]').fill(login)
    page.locator('input[name="password"]').fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()


@contextlib.contextmanager
def person(browser: Browser, world: World, login: str) -> Iterator[tuple[Page, list[str]]]:
    """A browser of its own, signed in as ``login`` through the provider's pages; errors the
    relay's pages report are kept (the provider's own pages load a web font they cannot)."""
    context: BrowserContext = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(timeout(15) * 1000)
    problems: list[str] = []
    page = context.new_page()

    def seen(text: str) -> None:
        # A resource that failed to load is judged by its response below, by its own URL.
        if page.url.startswith(world.relay.http) and not text.startswith("Failed to load"):
            problems.append(text)

    page.on("console", lambda m: seen(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen(str(e)))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.url.startswith(world.relay.http) and r.status >= 400
            else None
        ),
    )
    try:
        through_the_provider(page, world, login)
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


def alice_things(world: World) -> list[str]:
    """Everything of Alice's a page or an answer could leak."""
    key = world.facts["alice_key"]
    return ["wonderland", ALICE_MODEL, "rabbit-hole", "tea party", key[:11], "Alice Liddell"]


def assert_learns_nothing(world: World, token: str, alice: dict[str, str]) -> None:
    """Every /api endpoint answers Bob's personal token as if Alice's things did not exist."""
    for path in ("/api/v1/clusters", "/api/v1/keys?revoked=1", "/api/v1/nodes"):
        status, body = world.api(path, token)
        assert status == 200, (path, body)
        assert not any(word in json.dumps(body) for word in alice_things(world)), (path, body)
    cluster, key_id, node = alice["cluster_id"], alice["key_id"], "rabbit-hole"
    refused = [
        ("GET", f"/api/v1/nodes?cluster={cluster}", None),
        ("GET", "/api/v1/nodes?cluster=wonderland", None),
        ("GET", f"/api/v1/usage?cluster={cluster}", None),
        ("GET", f"/api/v1/usage/records?cluster={cluster}", None),
        ("GET", f"/api/v1/keys?cluster={cluster}", None),
        ("GET", f"/api/v1/keys/{key_id}", None),
        ("DELETE", f"/api/v1/keys/{key_id}", None),
        ("POST", f"/api/v1/keys/{key_id}/rotate", {}),
        ("POST", "/api/v1/keys", {"cluster": "wonderland", "name": "sneaky"}),
        ("DELETE", f"/api/v1/nodes/{node}?cluster={cluster}", None),
        ("GET", f"/api/v1/clusters/{cluster}/members", None),
        ("POST", f"/api/v1/clusters/{cluster}/invitations", {}),
    ]
    for method, path, body in refused:
        status, answer = world.api(path, token, body, method)
        assert status == 404, (method, path, status, answer)
        assert answer["error"]["code"] in ("cluster_not_found", "key_not_found"), answer
    status, users = world.api("/api/v1/users", token)
    assert status == 403, users  # not an operator


REFUSED_POSTS: list[tuple[str, int]] = []


def assert_dashboard_refuses(page: Page, world: World, alice: dict[str, str]) -> None:
    """The dashboard's own endpoints, called from Bob's signed-in page with his CSRF token."""
    cluster = alice["cluster_id"]
    REFUSED_POSTS[:] = [
        (f"/dashboard/keys/{alice['key_id']}/revoke", 404),
        ("/dashboard/keys", 404),
        (f"/dashboard/clusters/{cluster}/invitations", 404),
        (f"/dashboard/clusters/{cluster}/members/{alice['user_id']}/remove", 404),
        (f"/dashboard/users/{alice['user_id']}/disable", 403),
    ]
    for path, status in REFUSED_POSTS:
        got = page.evaluate(
            """async ([path, cluster]) => {
                const csrf = document.querySelector('meta[name="quorum-csrf"]').content;
                const resp = await fetch(path, {method: "POST", body: JSON.stringify(
                    {cluster: cluster, name: "sneaky"}), headers: {"X-CSRF-Token": csrf,
                    "Content-Type": "application/json"}});
                return [resp.status, await resp.text()];
            }""",
            [path, cluster],
        )
        assert got[0] == status, (path, got)
    # Asking the live stream for her cluster by id gives his own view.
    first = page.evaluate(
        """(cluster) => new Promise((done) => {
            const stream = new EventSource("/dashboard/events?cluster=" + cluster);
            stream.addEventListener("snapshot", (ev) => { stream.close(); done(ev.data); });
        })""",
        cluster,
    )
    assert not any(word in first for word in alice_things(world)), first


def test_bob_learns_nothing_of_alices_things_until_invited(world: World, browser: Browser) -> None:
    alice_token = world.facts["alice_token"]
    _, clusters = world.api("/api/v1/clusters", alice_token)
    (wonderland,) = clusters["data"]
    _, keys = world.api("/api/v1/keys", alice_token)
    alice = {
        "cluster_id": wonderland["id"],
        "key_id": keys["data"][0]["id"],
        "user_id": world.api("/api/v1/me", alice_token)[1]["id"],
    }
    with person(browser, world, "bob") as (page, problems):
        go(page, "account")
        expect(page.locator("#me")).to_contain_text("Bob Builder")
        expect(page.locator("#me")).to_contain_text("· user")
        expect(page.locator("#users-section")).to_be_hidden()
        for name in ("fleet", "models", "keys", "usage", "clusters", "account"):
            go(page, name)
            expect(page.locator("#live")).to_have_text("live")
            content = page.content()
            assert not any(word in content for word in alice_things(world)), name
        token = personal_token(page, "bob cli")
        assert_learns_nothing(world, token, alice)
        assert_dashboard_refuses(page, world, alice)
        expected = [f"{status} {world.relay.http}{path}" for path, status in REFUSED_POSTS]
        problems[:] = [p for p in problems if p not in expected]

        # His own cluster, node and key: his hardware serves only his requests.
        go(page, "clusters")
        page.locator("#cluster-name").fill("workshop")
        page.locator("#cluster-create").click()
        expect(page.locator("#cluster-token")).to_have_text(re.compile(r"^qc_\S{20,}$"))
        world.node("bench", page.locator("#cluster-token").inner_text(), BOB_MODEL)
        page.locator("#cluster-done").click()
        go(page, "fleet")
        expect(page.locator("#fleet tbody tr", has_text="bench")).to_contain_text("online")
        own = make_key(page, "workshop", "tools")
        with world.client(own) as client:
            assert chat(client, BOB_MODEL, "can we fix it") == "You said: can we fix it"
            assert [m.id for m in client.models.list()] == [BOB_MODEL]
            with pytest.raises(openai.NotFoundError):
                chat(client, ALICE_MODEL, "let me in")
        with world.client(world.facts["alice_key"]) as client:
            assert [m.id for m in client.models.list()] == [ALICE_MODEL]
            with pytest.raises(openai.NotFoundError):
                chat(client, BOB_MODEL, "yours?")
        # Alice is the operator: she sees the whole fleet, as the admin token does.
        _, seen = world.api("/api/v1/nodes", alice_token)
        assert sorted(n["name"] for n in seen["data"]) == ["bench", "rabbit-hole"]

        # Alice invites Bob: he joins with the code, sees her models, uses them with his key.
        status, invitation = world.api(
            f"/api/v1/clusters/{wonderland['id']}/invitations", alice_token, {}
        )
        assert status == 201, invitation
        go(page, "clusters")
        page.locator("#invite-code").fill(invitation["code"])
        page.locator("#invite-accept").click()
        expect(page.locator("#clusters tbody tr", has_text="wonderland")).to_contain_text("member")
        go(page, "models")
        expect(page.locator("#models")).to_contain_text(ALICE_MODEL)
        go(page, "fleet")  # her node, but not the address it connects from
        hers = page.locator("#fleet tbody tr", has_text="rabbit-hole")
        expect(hers).to_contain_text("tunnel from the owner's network")
        expect(page.locator("#fleet tbody tr", has_text="bench")).to_contain_text("127.0.0.1")
        guest = make_key(page, "wonderland", "visiting")
        with world.client(guest) as client:
            assert chat(client, ALICE_MODEL, "hello alice") == "You said: hello alice"
        # A member sees the cluster, not Alice's key nor her requests.
        go(page, "keys")
        assert world.facts["alice_key"][:11] not in page.content()
        status, usage = world.api(f"/api/v1/usage/records?cluster={wonderland['id']}", token)
        assert status == 200 and [r["key_id"] for r in usage["data"]] == [
            world.api(f"/api/v1/keys/{guest[:11]}", token)[1]["id"]
        ]
        status, owner_view = world.api(
            f"/api/v1/usage?cluster={wonderland['id']}&by=key", alice_token
        )
        # The owner sees every key's requests: Alice's two (one a 404) and Bob's one.
        by_key = {r["prefix"]: r["requests"] for r in owner_view["data"]}
        assert status == 200 and by_key == {world.facts["alice_key"][:11]: 2, guest[:11]: 1}

        # Removed, his key stops at the very next request, and the cluster is gone for him.
        _, bob = world.api("/api/v1/me", token)
        status, _ = world.api(
            f"/api/v1/clusters/{wonderland['id']}/members/{bob['id']}", alice_token, method="DELETE"
        )
        assert status == 200
        with world.client(guest) as client, pytest.raises(openai.AuthenticationError):
            chat(client, ALICE_MODEL, "still here?")
        status, listed = world.api("/api/v1/clusters", token)
        assert [c["name"] for c in listed["data"]] == ["workshop"]
        # Invited again, he leaves on his own from the Clusters page.
        _, again = world.api(f"/api/v1/clusters/{wonderland['id']}/invitations", alice_token, {})
        go(page, "clusters")
        page.locator("#invite-code").fill(again["code"])
        page.locator("#invite-accept").click()
        mine = page.locator("#clusters tbody tr", has_text="wonderland")
        mine.get_by_role("button", name="Leave").click()
        expect(mine).to_have_count(0)
        assert [c["name"] for c in world.api("/api/v1/clusters", token)[1]["data"]] == ["workshop"]
        world.facts.update(bob_token=token, bob_key=own, bob_id=bob["id"])
        assert not problems, problems


def test_a_disabled_user_loses_sessions_tokens_and_keys_at_once(
    world: World, browser: Browser
) -> None:
    with (
        person(browser, world, "bob") as (bob_page, _),
        person(browser, world, "alice") as (
            alice_page,
            problems,
        ),
    ):
        go(alice_page, "account")
        row = alice_page.locator("#users tbody tr", has_text="Bob Builder")
        expect(row).to_contain_text("active")
        row.get_by_role("button", name="Disable").click()
        expect(row).to_contain_text("disabled")
        # His open page is signed out by its live stream, his next request is refused.
        expect(bob_page).to_have_title("Sign in · Quorum relay", timeout=timeout(10) * 1000)
        status, _ = world.api("/api/v1/me", world.facts["bob_token"])
        assert status == 401
        # Nor can he sign in again while disabled.
        context = browser.new_context()
        try:
            again = context.new_page()
            through_the_provider(again, world, "bob")
            expect(again).to_have_title("Sign in · Quorum relay")
            expect(again.locator("#error")).to_have_text("This account is disabled.")
            assert not [c for c in context.cookies() if c["name"] == "quorum_relay_session"]
        finally:
            context.close()
        with (
            world.client(world.facts["bob_key"]) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            chat(client, BOB_MODEL, "anyone?")
        # The cluster he owns is suspended meanwhile: its node's tunnel is closed.
        go(alice_page, "clusters")
        workshop = alice_page.locator("#clusters tbody tr", has_text="workshop")
        expect(workshop).to_contain_text("suspended (owner disabled)")
        go(alice_page, "account")
        # Enabled again, his key works again (nothing was deleted), once his node is back
        # (it kept trying, at its reconnection backoff: up to 30 s).
        row.get_by_role("button", name="Enable").click()
        expect(row).to_contain_text("active")
        go(alice_page, "clusters")
        expect(workshop).not_to_contain_text("suspended")
        wait_until(lambda: world.online("bench", world.facts["bob_token"]), 45, "bench online")
        with world.client(world.facts["bob_key"]) as client:
            assert chat(client, BOB_MODEL, "back") == "You said: back"
        assert not problems, problems
    assert world.facts["alice_key"] not in world.relay.log.read_text()
    assert world.oidc.client_secret not in world.relay.log.read_text()


def test_signing_out_everywhere_ends_every_session_of_the_user(
    world: World, browser: Browser
) -> None:
    with (
        person(browser, world, "alice") as (laptop, _),
        person(browser, world, "alice") as (
            phone,
            problems,
        ),
    ):
        go(laptop, "account")
        laptop.locator("#signout-everywhere").click()
        expect(laptop).to_have_title("Sign in · Quorum relay")
        # The other browser's open page is signed out by its live stream.
        expect(phone).to_have_title("Sign in · Quorum relay", timeout=timeout(10) * 1000)
        assert phone.request.get(world.relay.http + "/dashboard/session").status == 401
        assert not problems, problems
    status, _ = world.api("/api/v1/me", world.facts["alice_token"])
    assert status == 200  # personal tokens are not sessions: revoke them one by one


def test_the_admin_token_manages_users_on_the_dashboard_too(world: World, open_page: Any) -> None:
    admin = (world.relay.data / "admin_token").read_text().strip()
    page = open_page(world.relay.http + "/")
    page.locator("#token").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live")).to_have_text("live")
    go(page, "account")
    expect(page.locator("#account-section")).to_be_hidden()  # no account of its own
    row = page.locator("#users tbody tr", has_text="Bob Builder")
    expect(page.locator("#users tbody tr", has_text="Alice Liddell")).to_contain_text("operator")
    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    assert world.api("/api/v1/me", world.facts["bob_token"])[0] == 401
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("active")
    assert world.api("/api/v1/me", world.facts["bob_token"])[0] == 200
    go(page, "clusters")  # the whole fleet's clusters, and no joining for the admin token
    expect(page.locator("#clusters")).to_contain_text("wonderland")
    expect(page.locator("#clusters")).to_contain_text("workshop")
    expect(page.locator("#join-section")).to_be_hidden()
