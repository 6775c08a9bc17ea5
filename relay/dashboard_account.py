"""The dashboard's buttons for clusters, members, personal tokens and users.

Routes (each a change: a live session and its CSRF token, ``dashboard._changing``)::

    POST /dashboard/clusters                              {name} -> 201, its join token once
    POST /dashboard/clusters/{c}/invitations              owner -> 201 {code} (once)
    POST /dashboard/invitations/accept                    {code} -> the cluster joined
    POST /dashboard/clusters/{c}/members/{user}/remove    owner (or the member leaving)
    POST /dashboard/tokens                                {name?} -> 201, the token once
    POST /dashboard/tokens/{id}/revoke
    POST /dashboard/users/{user}/disable|enable           operator

They call the same ``relay.user_ops`` operations as ``/api`` and the CLI. The
admin token's session may create clusters and manage users; the rest needs an
account.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from quorum.errors import Forbidden, InvalidRequest, NotFound
from relay import revocation
from relay.admin import AdminOps
from relay.context import STATE
from relay.dashboard import MAX_LABEL, Signed, _changing, _json
from relay.user_ops import ADMIN, UserOps

log = logging.getLogger("relay.dashboard")


def _user_ops(request: web.Request, signed: Signed, *, admin: bool = False) -> UserOps:
    state = request.app[STATE]
    if signed.user is None and not admin:
        raise Forbidden("Sign in with an account for this.", code="needs_user")
    return UserOps(state.store, state.clock, signed.user or ADMIN)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_LABEL:
        raise InvalidRequest(f"'{name}' is text of at most {MAX_LABEL} characters.", param=name)
    return value.strip()


async def create_cluster(request: web.Request) -> web.Response:
    signed = await _changing(request)
    name = _text(await _json(request), "name")
    state = request.app[STATE]
    ops = (
        AdminOps(state.store, state.clock)
        if signed.user is None
        else UserOps(state.store, state.clock, signed.user)
    )
    made = await asyncio.to_thread(ops.create_cluster, name)
    log.info("cluster %s created from the dashboard", made["name"])
    return web.json_response(made, status=201)


async def invite(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request))
    made = await asyncio.to_thread(ops.invite, request.match_info["cluster"])
    return web.json_response(made, status=201)


async def accept(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request))
    code = _text(await _json(request), "code")
    return web.json_response(await asyncio.to_thread(ops.accept, code))


async def remove_member(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request), admin=True)
    result = await asyncio.to_thread(
        ops.remove_member, request.match_info["cluster"], request.match_info["user"]
    )
    await revocation.keys_changed(
        request.app[STATE].hub, result["cluster_id"], revocation.MEMBER_REMOVED
    )
    return web.json_response(result)


async def create_token(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request))
    name = _text(await _json(request), "name")
    return web.json_response(await asyncio.to_thread(ops.create_token, name), status=201)


async def revoke_token(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request))
    return web.json_response(await asyncio.to_thread(ops.revoke_token, request.match_info["token"]))


async def set_disabled(request: web.Request) -> web.Response:
    ops = _user_ops(request, await _changing(request), admin=True)
    action = request.match_info["action"]
    if action not in ("disable", "enable"):
        raise NotFound(f"No action '{action}'.")
    user = await asyncio.to_thread(
        ops.set_disabled, request.match_info["user"], action == "disable"
    )
    log.info("user %s %sd from the dashboard", user["id"][:8], action)
    state = request.app[STATE]
    await revocation.user_changed(state.store, state.hub, user["id"], disabled=user["disabled"])
    return web.json_response(user)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/dashboard/clusters", create_cluster)
    r.add_post("/dashboard/clusters/{cluster}/invitations", invite)
    r.add_post("/dashboard/invitations/accept", accept)
    r.add_post("/dashboard/clusters/{cluster}/members/{user}/remove", remove_member)
    r.add_post("/dashboard/tokens", create_token)
    r.add_post("/dashboard/tokens/{token}/revoke", revoke_token)
    r.add_post("/dashboard/users/{user}/{action}", set_disabled)
