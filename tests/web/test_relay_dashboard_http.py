"""The dashboard's sign-in, sessions and CSRF checks with plain HTTP, against a real relay.

No browser here: each request is made by hand, with or without the session cookie, the
CSRF token, a foreign ``Origin``. The relay is a real ``quorum-relay serve`` process; the
few checks that need a clock or TLS run the same app in-process.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay import dashboard
from relay.dashboard_auth import CSRF_HEADER, SESSION_COOKIE, Sessions
from relay.hub import Hub
from relay.open_store import open_store
from relay.server import build_app
from tests.harness import timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.web.test_events import events

ADMIN = "qa_in-process-admin-token-0123456789"


@dataclass
class Site:
    relay: Relay
    admin: str

    @property
    def http(self) -> str:
        return self.relay.http


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("relay-dashboard-http") / "relay"
    data.mkdir()
    create_cluster(data, "home")
    relay = Relay(data).start()
    try:
        yield Site(relay, relay_cli(data, "admin-token").strip())
    finally:
        relay.kill()


@asynccontextmanager
async def visitor(source: str = "127.0.0.1") -> AsyncIterator[aiohttp.ClientSession]:
    """A client with its own cookie jar (IP hosts allowed), from ``source``."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(local_addr=(source, 0)),
        timeout=aiohttp.ClientTimeout(total=timeout(10)),
    ) as http:
        yield http


def field(page: str, pattern: str) -> str:
    found = re.search(pattern, page)
    assert found, f"{pattern} not in the page"
    return found.group(1)


async def sign_in_form(http: aiohttp.ClientSession, base: str) -> str:
    """Open the sign-in page; the form's one-off token (its cookie is in the jar)."""
    async with http.get(base + "/") as resp:
        assert resp.status == 200
        return field(await resp.text(), r'name="csrf" value="([^"]+)"')


async def sign_in(
    http: aiohttp.ClientSession, base: str, token: str, **headers: str
) -> aiohttp.ClientResponse:
    login = await sign_in_form(http, base)
    async with http.post(
        base + "/dashboard/signin",
        data={"token": token, "csrf": login},
        headers={"Origin": base, **headers},
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


async def signed_in(http: aiohttp.ClientSession, base: str, admin: str) -> str:
    """Sign in; the session's CSRF token, as the dashboard page carries it."""
    assert (await sign_in(http, base, admin)).status == 303
    async with http.get(base + "/") as resp:
        return field(await resp.text(), r'name="quorum-csrf" content="([^"]+)"')


async def admin_failures(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    found = re.search(r'quorum_relay_auth_failures_total\{kind="admin"\} ([\d.]+)', text)
    return float(found.group(1)) if found else 0.0


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method, url, json=body, headers=headers or {}, allow_redirects=False
    ) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode()


async def test_a_wrong_admin_token_is_refused_and_counted_like_any_other(site: Site) -> None:
    async with visitor("127.0.0.2") as http:
        before = await admin_failures(http, site.http)
        refused = await sign_in(http, site.http, "qa_not-the-admin-token-00000")
        assert refused.status == 401
        assert SESSION_COOKIE not in {c.key for c in http.cookie_jar}
        assert await admin_failures(http, site.http) == before + 1
        # The sign-in shares the relay's bucket of failed admin tokens: ten failures in
        # all, and this address gets 429 for the next wrong one...
        for _ in range(9):
            await sign_in(http, site.http, "qa_not-the-admin-token-00000")
        limited = await sign_in(http, site.http, "qa_not-the-admin-token-00000")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
        assert SESSION_COOKIE not in {c.key for c in http.cookie_jar}
        # ...but never for the right one (someone else behind the same address).
        status, _ = await call(
            http,
            "GET",
            site.http + "/api/v1/clusters",
            headers={"Authorization": f"Bearer {site.admin}"},
        )
        assert status == 200
    assert "qa_not-the-admin-token" not in site.relay.log.read_text()


async def test_a_sign_in_posted_from_elsewhere_is_refused(site: Site) -> None:
    url = site.http + "/dashboard/signin"
    async with visitor("127.0.0.3") as http:
        before = await admin_failures(http, site.http)
        # Straight at the endpoint, without the form's cookie.
        async with http.post(url, data={"token": site.admin, "csrf": "x" * 43}) as resp:
            assert resp.status == 403
        # The form's cookie, but another token in the form.
        await sign_in_form(http, site.http)
        async with http.post(url, data={"token": site.admin, "csrf": "y" * 43}) as resp:
            assert resp.status == 403
        # Everything right, but another site's page posted it.
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            assert (await sign_in(http, site.http, site.admin, **headers)).status == 403
        assert SESSION_COOKIE not in {c.key for c in http.cookie_jar}
        assert await admin_failures(http, site.http) == before  # refused before the token
        signed = await sign_in(http, site.http, site.admin)
        assert signed.status == 303 and signed.headers["Location"] == "/"
        cookie = signed.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


async def test_every_change_needs_the_session_and_its_csrf_token(site: Site) -> None:
    async with visitor() as http, visitor() as stranger:
        csrf = await signed_in(http, site.http, site.admin)
        good = {CSRF_HEADER: csrf, "Origin": site.http}
        status, made = await call(
            http, "POST", site.http + "/dashboard/keys", {"cluster": "home"}, good
        )
        assert status == 201
        changes = [
            ("/dashboard/keys", {"cluster": "home", "name": "sneaky"}),
            (f"/dashboard/keys/{made['id']}/revoke", {}),
            ("/dashboard/signout", {}),
        ]
        refusals = [
            {},
            {CSRF_HEADER: "not-the-token"},
            {CSRF_HEADER: csrf[:-1]},
            {CSRF_HEADER: csrf, "Origin": "http://evil.example"},
            {CSRF_HEADER: csrf, "Origin": "null"},
            {CSRF_HEADER: csrf, "Sec-Fetch-Site": "cross-site"},
            {CSRF_HEADER: csrf, "Sec-Fetch-Site": "same-site"},
        ]
        for path, body in changes:
            for headers in refusals:
                status, answer = await call(http, "POST", site.http + path, body, headers)
                assert status == 403, (path, headers, answer)
                assert answer["error"]["code"] == "csrf_failed"
            # A form post (as the sign-out button sends) is checked the same way.
            async with http.post(site.http + path, data={"csrf": "wrong"}) as resp:
                assert resp.status == 403, path
            # The right token without the session cookie: not signed in.
            status, answer = await call(stranger, "POST", site.http + path, body, good)
            assert (status, answer["error"]["code"]) == (401, "not_signed_in"), path
        # Nothing changed: one key, still active; the session still open.
        auth = {"Authorization": f"Bearer {site.admin}"}
        _, listed = await call(http, "GET", site.http + "/api/v1/keys?revoked=1", headers=auth)
        assert [(k["id"], k["state"]) for k in listed["data"]] == [(made["id"], "active")]
        assert (await call(http, "GET", site.http + "/dashboard/session"))[0] == 200

        # The sign-out form carries the token as a field: the session ends.
        async with http.post(
            site.http + "/dashboard/signout", data={"csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        assert (await call(http, "GET", site.http + "/dashboard/session"))[0] == 401
        assert (await call(http, "GET", site.http + "/dashboard/events"))[0] == 401
        status, page = await call(http, "GET", site.http + "/")
        assert status == 200 and 'action="/dashboard/signin"' in page
        status, _ = await call(
            http, "POST", site.http + "/dashboard/keys", {"cluster": "home"}, good
        )
        assert status == 401


async def first_snapshot(http: aiohttp.ClientSession, url: str) -> tuple[str, dict[str, Any]]:
    async with asyncio.timeout(timeout(10)), http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for name, data in events(resp):
            if name == "snapshot":
                return data, json.loads(data)
    raise AssertionError("the stream ended without a snapshot")


async def test_a_key_is_in_its_creation_answer_and_nowhere_else(site: Site) -> None:
    async with visitor() as http:
        csrf = await signed_in(http, site.http, site.admin)
        status, made = await call(
            http,
            "POST",
            site.http + "/dashboard/keys",
            {"cluster": "home", "name": "once", "models": ["a", "b"], "expires": "7d"},
            {CSRF_HEADER: csrf},
        )
        assert status == 201 and made["key"].startswith(made["prefix"] + "_")
        assert made["models"] == ["a", "b"] and made["expires_at"] is not None
        key = made["key"]
        seen = []
        for path in ("/", "/dashboard/static/dashboard.js", "/dashboard/session"):
            seen.append((await call(http, "GET", site.http + path))[1])
        raw, snap = await first_snapshot(http, site.http + "/dashboard/events")
        seen.append(raw)
        auth = {"Authorization": f"Bearer {site.admin}"}
        for path in ("/api/v1/keys", f"/api/v1/keys/{made['id']}"):
            seen.append((await call(http, "GET", site.http + path, headers=auth))[1])
        for answer in seen:
            assert key not in json.dumps(answer)
        (listed,) = [k for k in snap["keys"] if k["id"] == made["id"]]
        assert listed["prefix"] == made["prefix"] and "key" not in listed
        assert key not in site.relay.log.read_text()
        status, answer = await call(
            http, "POST", site.http + "/dashboard/keys", {"cluster": "nope"}, {CSRF_HEADER: csrf}
        )
        assert (status, answer["error"]["code"]) == (404, "cluster_not_found")


async def test_every_answer_carries_a_strict_policy(site: Site) -> None:
    async with visitor() as http:
        answers = []
        for path in ("/", "/dashboard/static/dashboard.css", "/dashboard/session"):
            async with http.get(site.http + path) as resp:
                answers.append(resp)
        await signed_in(http, site.http, site.admin)
        async with http.get(site.http + "/") as resp:
            page = await resp.text()
            answers.append(resp)
        for resp in answers:
            assert resp.headers["Content-Security-Policy"] == dashboard.CSP, resp.url
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in dashboard.CSP and "'unsafe" not in dashboard.CSP
        # Nothing inline for the policy to have to allow, nothing from elsewhere.
        for name in ("dashboard.html", "signin.html"):
            html = (Path(dashboard.__file__).parent / "static" / name).read_text()
            assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son\w+=", html), name
            assert not re.search(r"(src|href)=\"(https?:)?//", html), name
        assert re.findall(r'<script src="([^"]+)"', page) == [
            "/dashboard/static/common.js",
            "/dashboard/static/dashboard.js",
            "/dashboard/static/users.js",
        ]
        for path in ("dashboard.html", "signin.html", "..%2Fserver.py", "missing.js"):
            async with http.get(site.http + "/dashboard/static/" + path) as resp:
                assert resp.status == 404, path


async def in_process(tmp: Path, clock: list[float]) -> TestClient[Any, Any]:
    """The relay's app on a test server, sessions on a clock the test moves."""
    store = open_store(tmp)
    store.create_cluster("home", now=0.0)
    app = build_app(store, Hub(), admin_token=ADMIN, trust_forwarded=True)
    app[dashboard.SESSIONS] = Sessions(clock=lambda: clock[0], idle_s=60.0, absolute_s=600.0)
    app.on_cleanup.append(lambda _: asyncio.to_thread(store.close))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_session_ends_when_idle_and_its_stream_says_so(tmp_path: Path) -> None:
    clock = [1000.0]
    client = await in_process(tmp_path, clock)
    try:
        base = str(client.make_url("")).rstrip("/")
        # Behind a TLS proxy the relay trusts, the cookie is Secure (so this plain-http
        # client keeps it to itself: the session below is a second one).
        https = {"X-Forwarded-Proto": "https", "Origin": base.replace("http:", "https:")}
        tls = await sign_in(client.session, base, ADMIN, **https)
        assert tls.status == 303 and "; Secure" in tls.headers["Set-Cookie"]
        # ... where a page served over http cannot post.
        assert (
            await sign_in(client.session, base, ADMIN, **{**https, "Origin": base})
        ).status == 403
        await signed_in(client.session, base, ADMIN)
        async with client.get("/dashboard/events") as stream:
            assert stream.status == 200
            names = events(stream)
            async with asyncio.timeout(timeout(5)):
                assert (await anext(names))[0] == "snapshot"
                clock[0] += 61.0  # past the idle limit
                async for name, _ in names:
                    if name == "signedout":
                        break
        async with client.get("/dashboard/session") as resp:
            assert resp.status == 401
    finally:
        await client.close()


async def test_an_open_stream_does_not_hold_up_the_relay_stop(tmp_path: Path) -> None:
    clock = [1000.0]
    client = await in_process(tmp_path, clock)
    base = str(client.make_url("")).rstrip("/")
    await signed_in(client.session, base, ADMIN)
    loop = asyncio.get_running_loop()
    async with client.get("/dashboard/events") as stream:
        names = events(stream)
        async with asyncio.timeout(timeout(5)):
            assert (await anext(names))[0] == "snapshot"
        started = loop.time()
        await client.server.close()
        async with asyncio.timeout(timeout(5)):
            async for _ in names:
                pass
    assert loop.time() - started < timeout(3)
    await client.close()
