"""Signing in with GitHub's OAuth app flow (not OpenID Connect), against a local server that
answers GitHub's documented endpoints (``tests.oidc.harness.FakeGitHub``) and a real relay
process. The client is a plain HTTP client with a cookie jar that follows redirects, as a
browser does."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.fakes import LoopThread
from tests.harness import free_port, timeout
from tests.oidc.harness import FakeGitHub, users_relay
from tests.relay.harness import Relay


@dataclass
class GitHubWorld:
    relay: Relay
    github: FakeGitHub
    url: str


@pytest.fixture(scope="module")
def world(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHubWorld]:
    tmp: Path = tmp_path_factory.mktemp("github")
    github = FakeGitHub()

    async def serve() -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(github.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    runner, url = bg.run(serve())
    common = {"github": True, "client_id": github.client_id, "github_url": url}
    relay = users_relay(
        tmp,
        [
            {
                "name": "github",
                "label": "GitHub",
                **common,
                "github_api_url": url,
                "secret": github.client_secret,
            },
            {"name": "github-wrong", **common, "github_api_url": url, "secret": "not-the-secret"},
        ],
        free_port(),
        operators=["github:1000001"],  # hubot, by GitHub's user id
    )
    try:
        relay.start()
        yield GitHubWorld(relay, github, url)
    finally:
        relay.kill()
        bg.run(runner.cleanup())


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=timeout(20))
    ) as session:
        yield session


async def sign_in(world: GitHubWorld, http: aiohttp.ClientSession, provider: str) -> str:
    """Follow the sign-in from the relay's page to GitHub and back; the page's text."""
    async with http.get(world.relay.http + "/") as resp:
        page = await resp.text()
    assert f'href="/dashboard/signin/{provider}"' in page
    async with http.get(world.relay.http + f"/dashboard/signin/{provider}") as resp:
        return f"{resp.status} " + await resp.text()


async def csrf(world: GitHubWorld, http: aiohttp.ClientSession) -> str:
    async with http.get(world.relay.http + "/") as resp:
        found = re.search(r'name="quorum-csrf" content="([^"]+)"', await resp.text())
    assert found, "not signed in"
    return found.group(1)


async def me(world: GitHubWorld, http: aiohttp.ClientSession) -> dict[str, object]:
    """The signed-in account, through a personal token made on the dashboard."""
    token = await csrf(world, http)
    async with http.post(
        world.relay.http + "/dashboard/tokens", json={"name": "t"}, headers={"X-CSRF-Token": token}
    ) as resp:
        assert resp.status == 201, await resp.text()
        secret = (await resp.json())["token"]
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.get(
            world.relay.http + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"}
        ) as resp,
    ):
        assert resp.status == 200
        found: dict[str, object] = await resp.json()
        return found


async def test_the_first_github_user_and_one_named_in_config_sign_in_as_operators(
    world: GitHubWorld, browser: aiohttp.ClientSession
) -> None:
    answer = await sign_in(world, browser, "github")
    assert answer.startswith("200 ") and "Signed in" in answer
    session = [c for c in browser.cookie_jar if c.key == "quorum_relay_session"]
    assert session and session[0]["httponly"] and session[0]["samesite"] == "Strict"
    # No public email: the primary, verified one of /user/emails (scope user:email).
    assert world.github.seen[-4:] == ["authorize", "access_token", "user", "emails"]
    account = await me(world, browser)
    assert (account["provider"], account["subject"]) == ("github", "583231")
    assert (account["name"], account["role"]) == ("The Octocat", "operator")
    assert account["email"] == "octocat@github.test"

    world.github.login_as = "hubot"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        assert (await sign_in(world, other, "github")).startswith("200 ")
        account = await me(world, other)
    # No display name at GitHub: the login stands in. Not the first account, but the config
    # names it: an operator too.
    assert (account["name"], account["role"], account["subject"]) == (
        "hubot",
        "operator",
        "1000001",
    )
    assert account["email"] == "hubot@example.test"  # public on /user: no more is asked
    assert world.github.seen[-1] == "user"
    world.github.login_as = "octocat"


async def test_a_primary_email_github_has_not_verified_is_not_taken(world: GitHubWorld) -> None:
    world.github.login_as = "monalisa"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            assert (await sign_in(world, other, "github")).startswith("200 ")
            account = await me(world, other)
    finally:
        world.github.login_as = "octocat"
    assert world.github.seen[-1] == "emails"
    assert (account["name"], account["email"], account["role"]) == ("Mona", None, "user")


async def test_a_refused_code_and_a_forged_callback_sign_nobody_in(
    world: GitHubWorld, browser: aiohttp.ClientSession
) -> None:
    answer = await sign_in(world, browser, "github-wrong")  # the relay has a wrong secret
    assert answer.startswith("401 ") and "incorrect_client_credentials" in answer
    assert not [c for c in browser.cookie_jar if c.key == "quorum_relay_session"]
    # A callback this browser did not start (no pending sign-in, or another state).
    async with browser.get(
        world.relay.http + "/dashboard/signin/github/callback?code=abc&state=xyz"
    ) as resp:
        assert resp.status == 403 and "expired" in await resp.text()
    async with browser.get(
        world.relay.http + "/dashboard/signin/github", allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith(world.url)
        assert "code_challenge_method=S256" in resp.headers["Location"]
    async with browser.get(
        world.relay.http + "/dashboard/signin/github/callback?code=abc&state=forged"
    ) as resp:
        assert resp.status == 403
    assert not [c for c in browser.cookie_jar if c.key == "quorum_relay_session"]
    assert world.github.client_secret not in world.relay.log.read_text()


async def test_one_address_cannot_start_sign_ins_without_end(
    world: GitHubWorld, browser: aiohttp.ClientSession
) -> None:
    """Each started sign-in is kept until its callback: one address gets a bounded number."""
    statuses = []
    for _ in range(40):
        async with browser.get(
            world.relay.http + "/dashboard/signin/github", allow_redirects=False
        ) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {303}
    assert len(statuses) <= 31


def test_over_tls_every_sign_in_cookie_is_secure(world: GitHubWorld, tmp_path: Path) -> None:
    """``serve --tls-cert/--tls-key``: the one-off sign-in cookie and the session are Secure."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=timeout(60),
    )  # fmt: skip
    port = free_port()
    github = world.github
    relay = users_relay(
        tmp_path,
        [
            {"name": "github", "github": True, "client_id": github.client_id,
             "github_url": world.url, "github_api_url": world.url,
             "secret": github.client_secret},
        ],
        port,
    )  # fmt: skip
    config = relay.extra[-1]
    text = Path(config).read_text().replace(f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}")
    Path(config).write_text(text)
    context = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    with (relay.data / "relay.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--data", str(relay.data), "--config", config,
             "--tls-cert", str(cert), "--tls-key", str(key)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def flow() -> tuple[list[str], list[str]]:
        deadline = asyncio.get_running_loop().time() + timeout(20)
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=context),
        ) as http:
            while True:
                try:
                    async with http.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            async with http.get(base + "/dashboard/signin/github", allow_redirects=False) as resp:
                pending = resp.headers.getall("Set-Cookie")
                target = resp.headers["Location"]
            async with http.get(target) as resp:  # GitHub approves, back to the relay
                session = [
                    str(h.headers.get("Set-Cookie", "")) for h in resp.history
                ] + resp.headers.getall("Set-Cookie", [])
                assert resp.status == 200 and "Signed in" in await resp.text()
            return pending, session

    try:
        pending, session = asyncio.run(flow())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout(20))
    (one_off,) = [c for c in pending if c.startswith("quorum_relay_pending=")]
    assert "Secure" in one_off and "HttpOnly" in one_off and "SameSite=Lax" in one_off
    (cookie,) = [c for c in session if c.startswith("quorum_relay_session=")]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
