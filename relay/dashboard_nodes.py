"""The dashboard's node actions: remove a node, as ``quorum-relay node remove`` does.

Route::

    POST /dashboard/nodes/{node id}/remove   {cluster} -> 200 {cluster, node_id, removed}

Signed in and CSRF-checked like every change the dashboard makes
(``dashboard._changing``), and only for the relay's admin: a user signed in
with a provider gets 403 until the dashboard knows who owns which cluster
(issue 18). The node's key is refused from then on under any node id, and its
tunnel, open here, is closed at once (``revocation.removed``).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from quorum.errors import Forbidden, InvalidRequest
from relay import dashboard, revocation
from relay.admin import AdminOps
from relay.context import STATE

log = logging.getLogger("relay.dashboard")


async def remove_node(request: web.Request) -> web.Response:
    signed = await dashboard._changing(request)
    if getattr(signed, "user", None) is not None:
        raise Forbidden("Only the relay's admin may remove a node.", code="admin_only")
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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/dashboard/nodes/{node}/remove", remove_node)
