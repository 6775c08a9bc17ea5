"""Several relays sharing one PostgreSQL store: a sign-in started at one relay is finished by
another (the callback lands wherever the load balancer sends it), and is taken once. Real
relay processes, GitHub's OAuth endpoints answered by ``tests.oidc.harness.FakeGitHub``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.fakes import LoopThread
from tests.harness import free_port, timeout
from tests.oidc.harness import FakeGitHub, users_relay
from tests.postgres import fresh_schema
from tests.relay.harness import Relay


@dataclass
class Pair:
    relays: list[Relay]
    github: FakeGitHub


@pytest.fixture(scope="module")
def pair(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    github = FakeGitHub()

    async def serve() -> tuple[web.AppRunner, str]:
        runner = web.AppRunner(github.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    runner, url = bg.run(serve())
    with fresh_schema() as store:
        relays = []
        for n in range(2):
            relay = users_relay(
                tmp_path_factory.mktemp(f"relay{n}"),
                [
                    {
                        "name": "github",
                        "github": True,
                        "client_id": github.client_id,
                        "github_url": url,
                        "github_api_url": url,
                        "secret": github.client_secret,
                    }
                ],
                free_port(),
            )
            relay.extra = (*relay.extra, "--store", store)
            relays.append(relay)
        try:
            for relay in relays:
                relay.start()
            yield Pair(relays, github)
        finally:
            for relay in relays:
                relay.kill()
            bg.run(runner.cleanup())


def elsewhere(location: str, relay: Relay) -> str:
    """The same callback URL, at ``relay``."""
    parts = urlsplit(location)
    return f"{relay.http}{parts.path}?{parts.query}"


async def started(pair: Pair, http: aiohttp.ClientSession) -> str:
    """Start a sign-in at relay 1 and approve it at GitHub: the callback URL GitHub sends the
    browser back to (not followed)."""
    first = pair.relays[0]
    async with http.get(first.http + "/dashboard/signin/github", allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        authorize = resp.headers["Location"]
    async with http.get(authorize, allow_redirects=False) as resp:
        assert resp.status == 302
        callback = resp.headers["Location"]
    assert callback.startswith(first.http + "/dashboard/signin/github/callback?")
    return callback


async def signed_in_at(relay: Relay, http: aiohttp.ClientSession) -> bool:
    async with http.get(relay.http + "/") as resp:
        return 'name="quorum-csrf"' in await resp.text()


async def test_a_sign_in_started_at_one_relay_is_finished_at_another(pair: Pair) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=timeout(20))
    ) as http:
        callback = await started(pair, http)
        async with http.get(elsewhere(callback, pair.relays[1])) as resp:
            assert resp.status == 200 and "Signed in" in await resp.text()
        assert pair.github.seen[-4:] == ["authorize", "access_token", "user", "emails"]
        # The session lives in the store too: both relays know it.
        assert await signed_in_at(pair.relays[1], http)
        assert await signed_in_at(pair.relays[0], http)


async def test_a_pending_sign_in_is_taken_once_across_relays(pair: Pair) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=timeout(20))
    ) as http:
        callback = await started(pair, http)
        pending = [c for c in jar if c.key == "quorum_relay_pending"]
        assert pending
        # The same callback at relay 2 and then at relay 1 (a replay): only the first counts.
        async with http.get(elsewhere(callback, pair.relays[1])) as resp:
            assert resp.status == 200
        replay = aiohttp.CookieJar(unsafe=True)
        replay.update_cookies({"quorum_relay_pending": pending[0].value}, resp.url)
    async with aiohttp.ClientSession(
        cookie_jar=replay, timeout=aiohttp.ClientTimeout(total=timeout(20))
    ) as again:
        async with again.get(callback) as resp:
            assert resp.status == 403 and "expired" in await resp.text()
        assert not await signed_in_at(pair.relays[0], again)
