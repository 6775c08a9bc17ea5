"""The relay's dashboard at ``/``: sign in with the admin token, then fleet, models, keys, usage.

Routes::

    GET  /                                 the sign-in form, or the dashboard once signed in
    GET  /dashboard/static/{file}          its stylesheet and script (nothing else)
    POST /dashboard/signin                 form {token, csrf} -> 303 / with the session cookie;
                                           401 wrong token (counted against the address), 403
                                           foreign form, 429 too many failures
    POST /dashboard/signout                {csrf} -> 303 / and the session ends
    GET  /dashboard/session                200 while signed in, else 401
    GET  /dashboard/events?cluster=&window= server-sent ``snapshot`` events (``dashboard_live``)
    POST /dashboard/keys                   {cluster, name?, models?, expires?} -> 201, the key once
    POST /dashboard/keys/{id}/revoke       -> 200, the revoked key (prefix only)

Sessions and CSRF follow ``dashboard_auth``: every POST but the sign-in needs a
live session and its CSRF token (``X-CSRF-Token`` or form field ``csrf``);
errors have the API's shape. A key is in exactly one answer, its creation's;
listings and snapshots carry its prefix. Every answer under ``/`` and
``/dashboard/`` carries a Content-Security-Policy that allows only this
origin's own script and stylesheet (nothing inline, nothing from elsewhere,
no frames) and is never cached.
"""

from __future__ import annotations

import asyncio
import functools
import html
import importlib.resources
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from quorum.api.body import loads
from quorum.errors import Forbidden, InvalidRequest, RateLimited, Unauthorized
from relay import revocation
from relay.admin import AdminOps
from relay.context import STATE, RelayState, address, check_admin_token
from relay.dashboard_auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Sessions,
    new_secret,
    same_origin,
    same_token,
)
from relay.sessions import USERS, buttons
from relay.user_ops import UserOps
from relay.users import User

log = logging.getLogger("relay.dashboard")

SESSIONS: web.AppKey[Sessions] = web.AppKey("dashboard_sessions", Sessions)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("dashboard_stopping", asyncio.Event)

MAX_FORM = 16 * 1024
MAX_LABEL = 200
LOGIN_TTL_S = 3600

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {
    "common.js": "text/javascript",
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "users.js": "text/javascript",
}


@functools.cache
def _asset(name: str) -> str:
    return (importlib.resources.files("relay") / "static" / name).read_text("utf-8")


def _render(name: str, **values: str) -> str:
    """A page from ``static/``, each ``{{name}}`` replaced by its value, escaped."""
    page = _asset(name)
    for key, value in values.items():
        page = page.replace("{{" + key + "}}", html.escape(value, quote=True))
    return page


def _secure(request: web.Request) -> bool:
    """Whether the browser reached the relay over TLS (directly, or via a trusted proxy)."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.app[STATE].trust_forwarded and forwarded == "https"


def _cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, **kw: Any
) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", secure=_secure(request), **kw
    )


def _from_here(request: web.Request) -> bool:
    return same_origin(
        request.headers.get("Origin"),
        request.headers.get("Sec-Fetch-Site"),
        request.host,
        _secure(request),
    )


# -- signing in and out --------------------------------------------------------------


def _signin_page(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    login = new_secret()
    page = _render("signin.html", login=login, error=error)
    response = web.Response(
        text=page.replace("<!--providers-->", buttons(request.app.get(USERS))),
        status=status,
        content_type="text/html",
    )
    _cookie(response, request, LOGIN_COOKIE, login, max_age=LOGIN_TTL_S, path="/dashboard/signin")
    return response


@dataclass(frozen=True, slots=True)
class Signed:
    """Who a dashboard request comes from: the admin token's session (``user`` None) or a
    user's (``relay.sessions``, read from the store on every request)."""

    csrf: str
    user: User | None
    expires_in_s: float


async def _signed(request: web.Request) -> Signed | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    sessions = request.app[SESSIONS]
    admin = sessions.get(session_id)
    if admin is not None:
        return Signed(admin.csrf, None, sessions.remaining_s(admin))
    users = request.app.get(USERS)
    if users is None or not session_id:
        return None
    found = await asyncio.to_thread(users.sessions.get, session_id)
    if found is None:
        return None
    session, user = found
    return Signed(session.csrf, user, users.sessions.remaining_s(session))


async def index(request: web.Request) -> web.Response:
    signed = await _signed(request)
    if signed is None:
        return _signin_page(request)
    return web.Response(text=_render("dashboard.html", csrf=signed.csrf), content_type="text/html")


async def signin(request: web.Request) -> web.Response:
    if not _from_here(request):
        return _signin_page(request, 403, "This sign-in did not come from the relay's own page.")
    if request.content_length is None or request.content_length > MAX_FORM:
        return _signin_page(request, 400, "The sign-in form was too large.")
    form = await request.post()
    token, login = form.get("token"), form.get(CSRF_FIELD)
    expected = request.cookies.get(LOGIN_COOKIE)
    if expected is None or not isinstance(login, str) or not same_token(login, expected):
        return _signin_page(request, 403, "The sign-in form had expired; please try again.")
    try:
        check_admin_token(
            request, token.strip() if isinstance(token, str) else None, "Wrong admin token."
        )
    except RateLimited as exc:
        response = _signin_page(request, 429, "Too many failed attempts; try again later.")
        response.headers.update(exc.headers())
        return response
    except Unauthorized:
        return _signin_page(request, 401, "Wrong admin token.")
    sessions = request.app[SESSIONS]
    sessions.end(request.cookies.get(SESSION_COOKIE))  # a fresh id for every sign-in
    session_id, session = sessions.create()
    response = web.Response(status=303, headers={"Location": "/"})
    _cookie(
        response, request, SESSION_COOKIE, session_id, max_age=int(sessions.remaining_s(session))
    )
    response.del_cookie(LOGIN_COOKIE, path="/dashboard/signin")
    log.info("signed in to the dashboard from %s", address(request))
    return response


async def _session(request: web.Request) -> Signed:
    signed = await _signed(request)
    if signed is None:
        raise Unauthorized("Sign in to the dashboard first.", code="not_signed_in")
    return signed


async def _changing(request: web.Request) -> Signed:
    """The session of a request that changes something, once its CSRF token checks out."""
    session = await _session(request)
    if not _from_here(request):
        raise Forbidden("This request did not come from the dashboard.", code="csrf_failed")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type == "application/x-www-form-urlencoded":
        if request.content_length is None or request.content_length > MAX_FORM:
            raise InvalidRequest("The form is too large.")
        field = (await request.post()).get(CSRF_FIELD)
        presented = field if isinstance(field, str) else None
    if not same_token(presented, session.csrf):
        raise Forbidden(
            f"The request lacks the dashboard's CSRF token ({CSRF_HEADER}).", code="csrf_failed"
        )
    return session


async def signout(request: web.Request) -> web.Response:
    signed = await _changing(request)
    request.app[SESSIONS].end(request.cookies.get(SESSION_COOKIE))
    users = request.app.get(USERS)
    if signed.user is not None and users is not None:
        await asyncio.to_thread(users.sessions.end, request.cookies.get(SESSION_COOKIE))
    response = web.Response(status=303, headers={"Location": "/"})
    response.del_cookie(SESSION_COOKIE)
    log.info("signed out of the dashboard from %s", address(request))
    return response


async def session_state(request: web.Request) -> web.Response:
    signed = await _session(request)
    return web.json_response(
        {
            "signed_in": True,
            "expires_in_s": round(signed.expires_in_s),
            "user": None if signed.user is None else signed.user.id,
        }
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(text=_asset(name), content_type=STATIC[name], charset="utf-8")


# -- keys ------------------------------------------------------------------------------


def _ops(state: RelayState, user: User | None = None) -> AdminOps:
    """The admin token's operations, or those of a signed-in user (``relay.user_ops``)."""
    return (
        AdminOps(state.store, state.clock)
        if user is None
        else UserOps(state.store, state.clock, user)
    )


async def _json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise InvalidRequest("The request body is too large.")
    raw = await request.content.read(MAX_FORM + 1)
    if len(raw) > MAX_FORM:
        raise InvalidRequest("The request body is too large.")
    try:
        body = loads(raw or b"{}")  # bounded nesting: a deep body is a 400, never a 500
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _key_request(body: dict[str, Any]) -> tuple[str, str, tuple[str, ...] | None, object]:
    cluster, name = body.get("cluster"), body.get("name", "")
    if not isinstance(cluster, str) or not cluster:
        raise InvalidRequest("Choose the key's cluster.", param="cluster")
    if not isinstance(name, str) or len(name) > MAX_LABEL:
        raise InvalidRequest(f"The label is text of at most {MAX_LABEL} characters.", param="name")
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)
    ):
        raise InvalidRequest("Models are a list of model names, or null for all.", param="models")
    return cluster, name, None if not models else tuple(dict.fromkeys(models)), body.get("expires")


async def create_key(request: web.Request) -> web.Response:
    signed = await _changing(request)
    cluster, name, models, expires = _key_request(await _json(request))
    made = await asyncio.to_thread(
        _ops(request.app[STATE], signed.user).create_key, cluster, name, models, expires
    )
    log.info("key %s created for cluster %s from the dashboard", made["prefix"], made["cluster"])
    return web.json_response(made, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    signed = await _changing(request)
    revoked = await asyncio.to_thread(
        _ops(request.app[STATE], signed.user).revoke_key, request.match_info["key"]
    )
    log.info("key %s revoked from the dashboard", revoked["prefix"])
    await revocation.keys_changed(
        request.app[STATE].hub, revoked["cluster_id"], revocation.KEY_REVOKED
    )
    return web.json_response(revoked)


# -- wiring ----------------------------------------------------------------------------


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith("/dashboard/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


def add_routes(app: web.Application, sessions: Sessions | None = None) -> None:
    """Serve the dashboard on ``app`` (whose ``STATE`` holds the store, hub and admin token)."""
    app[SESSIONS] = sessions or Sessions()
    app[STOPPING] = asyncio.Event()
    app.on_response_prepare.append(_headers)
    app.on_shutdown.append(_stop_streams)
    r = app.router
    r.add_get("/", index)
    r.add_get("/dashboard/static/{name}", static)
    r.add_post("/dashboard/signin", signin)
    r.add_post("/dashboard/signout", signout)
    r.add_get("/dashboard/session", session_state)
    r.add_post("/dashboard/keys", create_key)
    r.add_post("/dashboard/keys/{key}/revoke", revoke_key)
