"""The dashboard's membership actions: remove a node, rotate a cluster's join token.

Routes::

    POST /dashboard/nodes/{node id}/remove      {cluster} -> 200 {cluster, node_id, removed}
    POST /dashboard/clusters/{c}/rotate         {grace} -> 201 {id, name, token (once),
                                                previous_accepted_until}
    POST /dashboard/clusters/{c}/rotate/finish  -> 200 {id, name, ended, closed}

Each does what its ``quorum-relay`` command does (``node remove``, ``cluster
rotate [--finish]``). Signed in and CSRF-checked like every change the
dashboard makes (``dashboard._changing``), and only for the relay's admin: a
user signed in with a provider gets 403 until the dashboard knows who owns
which cluster (issue 18). A removed node's key is refused from then on under
any node id, and its tunnel, open here, is closed at once; so are the tunnels
of a previous token when its rotation is finished (``relay.revocation``).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from quorum.errors import Forbidden, InvalidRequest
from relay import dashboard, revocation
from relay.admin import DEFAULT_GRACE, AdminOps
from relay.context import STATE

log = logging.getLogger("relay.dashboard")


async def remove_node(request: web.Request) -> web.Response:
    await _admin(request)
    cluster = (await dashboard._json(request)).get("cluster")
    if not isinstance(cluster, str) or not cluster:
        raise InvalidRequest("Name the node's cluster.", param="cluster")
    state = request.app[STATE]
    node_id = request.match_info["node"]
    ops = AdminOps(state.store, state.clock)
    result = await asyncio.to_thread(ops.remove_node, cluster, node_id)
    await revocation.removed(state.store, state.hub, result["cluster_id"], node_id)
    log.info("node %s of cluster %s removed from the dashboard", node_id, result["cluster"])
    return web.json_response(result)


async def _admin(request: web.Request) -> None:
    signed = await dashboard._changing(request)
    if getattr(signed, "user", None) is not None:
        raise Forbidden("Only the relay's admin may do this from the dashboard.", code="admin_only")


async def rotate(request: web.Request) -> web.Response:
    await _admin(request)
    grace = (await dashboard._json(request)).get("grace", DEFAULT_GRACE)
    state = request.app[STATE]
    ops = AdminOps(state.store, state.clock)
    made = await asyncio.to_thread(ops.rotate_cluster, request.match_info["cluster"], grace)
    log.info("cluster %s: join token rotated from the dashboard", made["name"])
    return web.json_response(made, status=201)


async def finish_rotation(request: web.Request) -> web.Response:
    await _admin(request)
    state = request.app[STATE]
    ops = AdminOps(state.store, state.clock)
    result = await asyncio.to_thread(ops.finish_rotation, request.match_info["cluster"])
    result["closed"] = await revocation.sweep(state.store, state.hub)
    log.info("cluster %s: previous join tokens retired from the dashboard", result["name"])
    return web.json_response(result)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/dashboard/nodes/{node}/remove", remove_node)
    app.router.add_post("/dashboard/clusters/{cluster}/rotate", rotate)
    app.router.add_post("/dashboard/clusters/{cluster}/rotate/finish", finish_rotation)
