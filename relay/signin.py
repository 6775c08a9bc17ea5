"""Users sign in to the dashboard with a configured provider (``relay.oidc``).

Routes::

    GET  /dashboard/signin/{provider}            -> 303 to the provider, with a one-off
                                                    cookie that finds this sign-in again
    GET  /dashboard/signin/{provider}/callback   ?code&state -> the session cookie, and a
                                                    page that goes on to the dashboard;
                                                    a refusal: the sign-in page saying why
    POST /dashboard/signout/everywhere           {csrf} -> every session of the user ends

The callback answers with a small page that moves on to ``/`` rather than a
redirect: the browser arrived from the provider's site, and a SameSite=Strict
cookie is not sent on a redirect chain that began on another site. The page
(no script: the Content-Security-Policy allows none inline) refreshes itself.

``install`` wires users into a relay app: the providers of the config, the
store-backed sessions the dashboard reads (``USERS``), these routes and the
personal-token ``/api`` (``relay.user_api``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from quorum.errors import ApiError, Forbidden
from relay import dashboard_account, user_api
from relay.context import STATE, address
from relay.dashboard import _changing, _cookie, _secure, _signin_page
from relay.dashboard_auth import SESSION_COOKIE
from relay.oidc import make_provider
from relay.sessions import USERS, PendingSignIns, Users, UserSessions
from relay.users import named_in
from relay.users_config import UsersConfig

log = logging.getLogger("relay.signin")

PENDING_COOKIE = "quorum_relay_pending"
PENDING_PATH = "/dashboard/signin/"


def _base(request: web.Request, users: Users) -> str:
    if users.config.public_url:
        return users.config.public_url.rstrip("/")
    return f"{'https' if _secure(request) else 'http'}://{request.host}"


def callback_url(request: web.Request, users: Users, provider: str) -> str:
    return f"{_base(request, users)}/dashboard/signin/{provider}/callback"


async def start(request: web.Request) -> web.StreamResponse:
    users = request.app[USERS]
    provider = users.providers.get(request.match_info["provider"])
    if provider is None:
        return _signin_page(request, 404, "No such sign-in provider.")
    source = address(request)
    wait = users.starts.retry_after(source)
    if wait is not None:
        refused = _signin_page(request, 429, "Too many sign-ins from here; try again later.")
        refused.headers["Retry-After"] = str(wait)
        return refused
    users.starts.failed(source)
    try:
        url, pending = await provider.start(callback_url(request, users, provider.name))
    except ApiError as exc:
        log.warning("sign-in with %s could not start: %s", provider.name, exc.message)
        return _signin_page(request, 502, exc.message)
    cookie = await asyncio.to_thread(users.pending.add, pending)
    response = web.Response(status=303, headers={"Location": url})
    # Lax: the provider sends the browser back with a cross-site top-level GET.
    response.set_cookie(
        PENDING_COOKIE,
        cookie,
        httponly=True,
        samesite="Lax",
        secure=_secure(request),
        max_age=int(users.pending.ttl_s),
        path=PENDING_PATH,
    )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    users = request.app[USERS]
    state = request.app[STATE]
    name = request.match_info["provider"]
    provider = users.providers.get(name)
    pending = await asyncio.to_thread(
        users.pending.take, request.cookies.get(PENDING_COOKIE), name, request.query.get("state")
    )
    if provider is None or pending is None:
        return _forget(_signin_page(request, 403, "This sign-in had expired; please try again."))
    if "error" in request.query:
        reason = request.query.get("error_description") or request.query["error"]
        return _forget(_signin_page(request, 401, f"The provider refused: {reason[:200]}"))
    code = request.query.get("code")
    if not code:
        return _forget(_signin_page(request, 400, "The provider sent no sign-in code."))
    try:
        who = await provider.finish(pending, code)
    except ApiError as exc:
        log.warning("sign-in with %s refused: %s", name, exc.message)
        return _forget(_signin_page(request, exc.status, exc.message))
    operator = named_in(
        users.config.operators,
        who.provider,
        who.subject,
        who.email if who.email_verified else None,
    )
    user = await asyncio.to_thread(
        state.store.sign_up,
        who.provider,
        who.subject,
        name=who.name,
        email=who.email,
        operator=operator,
        now=state.clock(),
    )
    if user.disabled:
        log.warning("disabled user %s tried to sign in", user.id[:8])
        return _forget(_signin_page(request, 403, "This account is disabled."))
    old = request.cookies.get(SESSION_COOKIE)
    await asyncio.to_thread(users.sessions.end, old)  # a fresh id for every sign-in
    session_id, session = await asyncio.to_thread(users.sessions.create, user.id)
    response = web.Response(
        text=_CONTINUE, content_type="text/html", headers={"Refresh": "0; url=/"}
    )
    _cookie(
        response,
        request,
        SESSION_COOKIE,
        session_id,
        max_age=int(users.sessions.remaining_s(session)),
    )
    response.del_cookie(PENDING_COOKIE, path=PENDING_PATH)
    log.info("user %s (%s) signed in with %s", user.id[:8], user.role.value, name)
    return response


_CONTINUE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="refresh" content="0; url=/"><title>Signed in · Quorum relay</title>'
    '</head><body><p>Signed in. <a href="/">Continue to the dashboard</a>.</p></body></html>'
)


def _forget(response: web.Response) -> web.Response:
    response.del_cookie(PENDING_COOKIE, path=PENDING_PATH)
    return response


async def signout_everywhere(request: web.Request) -> web.Response:
    signed = await _changing(request)
    if signed.user is None:
        raise Forbidden("The admin token's session has no account to sign out everywhere.")
    users = request.app[USERS]
    ended = await asyncio.to_thread(users.sessions.end_all, signed.user.id)
    response = web.Response(status=303, headers={"Location": "/"})
    response.del_cookie(SESSION_COOKIE)
    log.info("user %s signed out everywhere (%d sessions)", signed.user.id[:8], ended)
    return response


def install(app: web.Application, config: UsersConfig) -> None:
    """Give ``app`` (from ``relay.server.build_app``) users: providers, sessions, routes."""
    state = app[STATE]
    users = Users(config, UserSessions(state.store), PendingSignIns(state.store))
    app[USERS] = users
    secrets = {p.name: p.client_secret() for p in config.providers}  # fail at start, not later

    async def http(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            for p in config.providers:
                users.providers[p.name] = make_provider(p, secrets[p.name], session)
            yield
            users.providers.clear()

    app.cleanup_ctx.append(http)
    user_api.add_routes(app)
    dashboard_account.add_routes(app)
    r = app.router
    r.add_get("/dashboard/signin/{provider}", start)
    r.add_get("/dashboard/signin/{provider}/callback", callback)
    r.add_post("/dashboard/signout/everywhere", signout_everywhere)
