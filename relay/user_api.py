"""``/api/v1`` for users: their personal API token (``Authorization: Bearer qu_...``).

Every control-plane endpoint of ``relay.api`` answers a personal token too,
scoped to its user (``relay.user_ops``): the same paths, bodies and answers,
but only the user's clusters, keys, nodes and usage exist. A request with a
personal token is served here (``personal_tokens``, a middleware in front of
the admin handlers); with the admin token it goes on as before. The endpoints
only users have::

    GET    /api/v1/me                              the account
    POST   /api/v1/me/signout                      end every session (sign out everywhere)
    GET    /api/v1/tokens                          personal tokens (prefix only)
    POST   /api/v1/tokens                          {name?} -> the token (shown once)
    DELETE /api/v1/tokens/{id|prefix}              revoke
    GET    /api/v1/clusters/{c}/members            owner: everyone; member: the owner
    POST   /api/v1/clusters/{c}/invitations        owner -> {code} (one use, 7 days)
    POST   /api/v1/invitations/accept              {code} -> the cluster, now a member
    DELETE /api/v1/clusters/{c}/members/{user id}  owner removes a member (or one leaves):
                                                   their keys stop at the next request
    GET    /api/v1/users                           operator (or admin token): every user
    POST   /api/v1/users/{id}/disable|enable       operator (or admin token): a disabled
                                                   user's sessions, tokens and keys stop

A personal token that is unknown, revoked or whose user is disabled is a 401,
counted against the address like a wrong admin token.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from quorum.errors import InvalidRequest, NotFound, Unauthorized
from relay import api, revocation
from relay.admin import DEFAULT_GRACE
from relay.context import STATE, Handler, _refuse, bearer, require_admin
from relay.user_ops import ADMIN, UserOps
from relay.users import TOKEN_SCHEME, User

log = logging.getLogger("relay.users")

Params = dict[str, str]
Route = Callable[[web.Request, UserOps, Params], Awaitable[web.Response]]
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = []


def route(method: str, path: str) -> Callable[[Route], Route]:
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def add(fn: Route) -> Route:
        _ROUTES.append((method, pattern, fn))
        return fn

    return add


async def caller(request: web.Request) -> User | None:
    """The user of the personal token presented, or None for the admin token; else 401."""
    presented = bearer(request)
    if presented is None or not presented.startswith(TOKEN_SCHEME):
        require_admin(request)
        return None
    state = request.app[STATE]
    found = await asyncio.to_thread(state.store.user_for_token, presented)
    if found is None or found[0].revoked_at is not None or found[1].disabled:
        raise _refuse(request, "admin", "This personal token is unknown, revoked or disabled.")
    return found[1]


def ops_for(request: web.Request, user: User) -> UserOps:
    state = request.app[STATE]
    hub = state.hub
    return UserOps(state.store, state.clock, user, lambda cid, nid: hub.link(cid, nid) is not None)


async def _user_ops(request: web.Request, *, admin_as_operator: bool = False) -> UserOps:
    user = await caller(request)
    if user is None:
        if not admin_as_operator:
            raise Unauthorized(
                "This endpoint needs a user's personal token (Bearer qu_...).",
                code="needs_user",
            )
        user = ADMIN
    return ops_for(request, user)


def _run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return asyncio.to_thread(fn, *args)


@web.middleware
async def personal_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve ``/api/v1`` requests made with a personal token as that user."""
    presented = bearer(request) or ""
    if not request.path.startswith("/api/v1/") or not presented.startswith(TOKEN_SCHEME):
        return await handler(request)
    for method, pattern, fn in _ROUTES:
        match = pattern.match(request.path)
        if match is not None and method == request.method:
            user = await caller(request)
            assert user is not None
            return await fn(request, ops_for(request, user), match.groupdict())
    return await handler(request)  # a user-only route, or one that refuses this token


# -- the control plane, scoped ------------------------------------------------------------


@route("GET", "/api/v1/clusters")
async def list_clusters(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    return web.json_response({"data": await _run(ops.clusters)})


@route("POST", "/api/v1/clusters")
async def create_cluster(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    data = await api._body(request)
    made = await _run(ops.create_cluster, api._str(data, "name", ""), api._str(data, "token"))
    log.info("cluster %s created by user %s", made["name"], ops.user.id[:8])
    return web.json_response(made, status=201)


@route("GET", "/api/v1/keys")
async def list_keys(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    q = request.query
    keys = await _run(ops.keys, q.get("cluster"), q.get("revoked") in ("1", "true"))
    return web.json_response({"data": keys})


@route("POST", "/api/v1/keys")
async def create_key(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    data = await api._body(request)
    made = await _run(
        ops.create_key,
        api._str(data, "cluster"),
        api._str(data, "name", ""),
        api._models(data),
        data.get("expires"),
    )
    log.info("key %s created by user %s", made["prefix"], ops.user.id[:8])
    return web.json_response(made, status=201)


@route("GET", "/api/v1/keys/{key}")
async def get_key(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    return web.json_response(await _run(ops.key, p["key"]))


@route("DELETE", "/api/v1/keys/{key}")
@route("POST", "/api/v1/keys/{key}/revoke")
async def revoke_key(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    revoked = await _run(ops.revoke_key, p["key"])
    log.info("key %s revoked by user %s", revoked["prefix"], ops.user.id[:8])
    await revocation.keys_changed(
        request.app[STATE].hub, revoked["cluster_id"], revocation.KEY_REVOKED
    )
    return web.json_response(revoked)


@route("POST", "/api/v1/keys/{key}/rotate")
async def rotate_key(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    data = await api._body(request)
    made = await _run(ops.rotate_key, p["key"], data.get("expires", "keep"))
    await revocation.keys_changed(
        request.app[STATE].hub, made["cluster_id"], revocation.KEY_REVOKED
    )
    return web.json_response(made, status=201)


@route("GET", "/api/v1/nodes")
async def list_nodes(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    return web.json_response({"data": await _run(ops.nodes, request.query.get("cluster"))})


@route("DELETE", "/api/v1/nodes/{node}")
async def remove_node(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    node_id = p["node"]
    result = await _run(ops.remove_node, request.query.get("cluster") or "", node_id)
    state = request.app[STATE]
    await revocation.removed(state.store, state.hub, result["cluster_id"], node_id)
    log.info("node %s removed by user %s", node_id, ops.user.id[:8])
    return web.json_response(result)


@route("POST", "/api/v1/clusters/{cluster}/rotate")
async def rotate_cluster(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    data = await api._body(request)
    made = await _run(
        ops.rotate_cluster, p["cluster"], data.get("grace", DEFAULT_GRACE), api._str(data, "token")
    )
    log.info("cluster %s: join token rotated by user %s", made["name"], ops.user.id[:8])
    return web.json_response(made, status=201)


@route("POST", "/api/v1/clusters/{cluster}/rotate/finish")
async def finish_rotation(request: web.Request, ops: UserOps, p: Params) -> web.Response:
    state = request.app[STATE]
    result = await _run(ops.finish_rotation, p["cluster"])
    result["closed"] = await revocation.sweep(state.store, state.hub)
    return web.json_response(result)


@route("GET", "/api/v1/usage")
async def usage(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    q = request.query
    report = await _run(
        ops.usage, q.get("cluster"), q.get("by", "model"), q.get("since"), q.get("until")
    )
    return web.json_response(report)


@route("GET", "/api/v1/usage/records")
async def usage_records(request: web.Request, ops: UserOps, _: Params) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("'limit' is a number.", param="limit") from None
    return web.json_response(
        {"data": await _run(ops.usage_records, request.query.get("cluster"), limit)}
    )


# -- only users have these ----------------------------------------------------------------


async def me(request: web.Request) -> web.Response:
    return web.json_response((await _user_ops(request)).me())


async def signout_everywhere(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    ended = await _run(request.app[STATE].store.end_sessions, ops.user.id)
    log.info("user %s signed out everywhere (%d sessions)", ops.user.id[:8], ended)
    return web.json_response({"ended": ended})


async def list_tokens(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    return web.json_response({"data": await _run(ops.tokens)})


async def create_token(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    data = await api._body(request)
    return web.json_response(await _run(ops.create_token, api._str(data, "name", "")), status=201)


async def revoke_token(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    return web.json_response(await _run(ops.revoke_token, request.match_info["token"]))


async def members(request: web.Request) -> web.Response:
    ops = await _user_ops(request, admin_as_operator=True)
    return web.json_response({"data": await _run(ops.members, request.match_info["cluster"])})


async def invite(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    made = await _run(ops.invite, request.match_info["cluster"])
    log.info("user %s invited someone to cluster %s", ops.user.id[:8], made["cluster"])
    return web.json_response(made, status=201)


async def accept(request: web.Request) -> web.Response:
    ops = await _user_ops(request)
    data = await api._body(request)
    joined = await _run(ops.accept, api._str(data, "code", ""))
    log.info("user %s joined cluster %s", ops.user.id[:8], joined["name"])
    return web.json_response(joined)


async def remove_member(request: web.Request) -> web.Response:
    ops = await _user_ops(request, admin_as_operator=True)
    result = await _run(
        ops.remove_member, request.match_info["cluster"], request.match_info["user"]
    )
    log.info("user %s left cluster %s", result["user_id"][:8], result["cluster"])
    await revocation.keys_changed(
        request.app[STATE].hub, result["cluster_id"], revocation.MEMBER_REMOVED
    )
    return web.json_response(result)


async def list_users(request: web.Request) -> web.Response:
    ops = await _user_ops(request, admin_as_operator=True)
    return web.json_response({"data": await _run(ops.users)})


async def set_disabled(request: web.Request) -> web.Response:
    ops = await _user_ops(request, admin_as_operator=True)
    action = request.match_info["action"]
    if action not in ("disable", "enable"):
        raise NotFound(f"No action '{action}'.")
    user = await _run(ops.set_disabled, request.match_info["user"], action == "disable")
    log.info("user %s %sd by %s", user["id"][:8], action, ops.user.id[:8] or "the admin token")
    state = request.app[STATE]
    await revocation.user_changed(state.store, state.hub, user["id"], disabled=user["disabled"])
    return web.json_response(user)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(personal_tokens)
    r = app.router
    r.add_get("/api/v1/me", me)
    r.add_post("/api/v1/me/signout", signout_everywhere)
    r.add_get("/api/v1/tokens", list_tokens)
    r.add_post("/api/v1/tokens", create_token)
    r.add_delete("/api/v1/tokens/{token}", revoke_token)
    r.add_get("/api/v1/clusters/{cluster}/members", members)
    r.add_post("/api/v1/clusters/{cluster}/invitations", invite)
    r.add_delete("/api/v1/clusters/{cluster}/members/{user}", remove_member)
    r.add_post("/api/v1/invitations/accept", accept)
    r.add_get("/api/v1/users", list_users)
    r.add_post("/api/v1/users/{user}/{action}", set_disabled)
