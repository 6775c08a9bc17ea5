"""``/api/v1``: the control plane over HTTP (JSON in, JSON out, OpenAI-shaped errors).

Admin token (``Authorization: Bearer <admin token>``)::

    GET    /api/v1/clusters                       list clusters
    POST   /api/v1/clusters                       {name, token?} -> cluster + token (once)
    POST   /api/v1/clusters/{id|name}/rotate      {grace?: "24h"} -> cluster + new token (once);
                                                  the previous one accepted for the grace
    POST   /api/v1/clusters/{id|name}/rotate/finish   previous tokens refused from now on,
                                                  tunnels that joined with one closed at once
    GET    /api/v1/keys?cluster=C&revoked=1       list keys (no secrets)
    POST   /api/v1/keys                           {cluster, name?, models?, expires?}
                                                  -> the key's record + key (shown once)
    GET    /api/v1/keys/{id|prefix}
    DELETE /api/v1/keys/{id|prefix}               revoke (also POST .../revoke)
    POST   /api/v1/keys/{id|prefix}/rotate        {expires?} -> the replacement + key (once)
    GET    /api/v1/nodes?cluster=C                last heartbeat, online (< 60 s), connected
    DELETE /api/v1/nodes/{node id}?cluster=C      remove a node: its key is refused from now
                                                  on, its tunnel (if up) closed at once
    GET    /api/v1/usage?cluster=C&by=model|node|key|day&since=7d&until=...
    GET    /api/v1/usage/records?cluster=C&limit=100

Cluster token (what nodes call; a token only ever reaches its own cluster)::

    POST   /api/v1/keys/verify    {key, model?} -> 200 {valid, key_id, name, models,
                                  expires_at} | 401 (unknown, revoked, expired, or another
                                  cluster's key: the same answer) | 403 (model not allowed)
    POST   /api/v1/usage          UsageBatch -> 200 {accepted, duplicates}, sent only
                                  after the batch is committed; re-sending is harmless
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from quorum.api.body import loads
from quorum.errors import Forbidden, InvalidRequest, RateLimited, RemoteProtocolError, Unauthorized
from quorum.protocol import UsageBatch
from relay import revocation
from relay.admin import DEFAULT_GRACE, AdminOps
from relay.context import (
    STATE,
    address,
    key_usable,
    require_admin,
    require_node,
    suspended_message,
)
from relay.keys import KeyState, allows_model

log = logging.getLogger("relay.api")

MAX_API_BODY = 8 * 1024 * 1024
T = TypeVar("T")


def _ops(request: web.Request) -> AdminOps:
    state = request.app[STATE]
    hub = state.hub
    return AdminOps(state.store, state.clock, lambda cid, nid: hub.link(cid, nid) is not None)


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_API_BODY:
        raise InvalidRequest("The request body is too large for the control plane.")
    raw = await request.content.read(MAX_API_BODY + 1)
    if len(raw) > MAX_API_BODY:
        raise InvalidRequest("The request body is too large for the control plane.")
    if not raw:
        return {}
    try:
        data = loads(raw)  # bounded nesting: a deep body is a 400, never a 500
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def _str(data: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name)
    return value


def _models(data: dict[str, Any]) -> tuple[str, ...] | None:
    value = data.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise InvalidRequest("'models' is a list of model names, or null for all.", param="models")
    return tuple(dict.fromkeys(value))


# -- admin ---------------------------------------------------------------------


async def list_clusters(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"data": await _run(_ops(request).clusters)})


async def create_cluster(request: web.Request) -> web.Response:
    require_admin(request)
    data = await _body(request)
    made = await _run(_ops(request).create_cluster, _str(data, "name", ""), _str(data, "token"))
    log.info("cluster %s created through the API", made["name"])
    return web.json_response(made, status=201)


async def rotate_cluster(request: web.Request) -> web.Response:
    require_admin(request)
    data = await _body(request)
    made = await _run(
        _ops(request).rotate_cluster,
        request.match_info["cluster"],
        data.get("grace", DEFAULT_GRACE),
        _str(data, "token"),
    )
    log.info("cluster %s: join token rotated through the API", made["name"])
    return web.json_response(made, status=201)


async def finish_rotation(request: web.Request) -> web.Response:
    require_admin(request)
    state = request.app[STATE]
    result = await _run(_ops(request).finish_rotation, request.match_info["cluster"])
    result["closed"] = await revocation.sweep(state.store, state.hub)
    log.info("cluster %s: previous join tokens retired through the API", result["name"])
    return web.json_response(result)


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    keys = await _run(_ops(request).keys, q.get("cluster"), q.get("revoked") in ("1", "true"))
    return web.json_response({"data": keys})


async def create_key(request: web.Request) -> web.Response:
    require_admin(request)
    data = await _body(request)
    made = await _run(
        _ops(request).create_key,
        _str(data, "cluster"),
        _str(data, "name", ""),
        _models(data),
        data.get("expires"),
    )
    log.info("key %s created for cluster %s through the API", made["prefix"], made["cluster"])
    return web.json_response(made, status=201)


async def get_key(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await _run(_ops(request).key, request.match_info["key"]))


async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    revoked = await _run(_ops(request).revoke_key, request.match_info["key"])
    log.info("key %s revoked through the API", revoked["prefix"])
    await revocation.keys_changed(
        request.app[STATE].hub, revoked["cluster_id"], revocation.KEY_REVOKED
    )
    return web.json_response(revoked)


async def rotate_key(request: web.Request) -> web.Response:
    require_admin(request)
    data = await _body(request)
    made = await _run(
        _ops(request).rotate_key, request.match_info["key"], data.get("expires", "keep")
    )
    log.info("key %s rotated through the API (now %s)", made["replaces"], made["prefix"])
    await revocation.keys_changed(
        request.app[STATE].hub, made["cluster_id"], revocation.KEY_REVOKED
    )
    return web.json_response(made, status=201)


async def list_nodes(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(
        {"data": await _run(_ops(request).nodes, request.query.get("cluster"))}
    )


async def remove_node(request: web.Request) -> web.Response:
    require_admin(request)
    node_id = request.match_info["node"]
    result = await _run(_ops(request).remove_node, request.query.get("cluster") or "", node_id)
    state = request.app[STATE]
    await revocation.removed(state.store, state.hub, result["cluster_id"], node_id)
    log.info("node %s of cluster %s removed through the API", node_id, result["cluster"])
    return web.json_response(result)


async def usage(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    report = await _run(
        _ops(request).usage, q.get("cluster"), q.get("by", "model"), q.get("since"), q.get("until")
    )
    return web.json_response(report)


async def usage_records(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("'limit' is a number.", param="limit") from None
    records = await _run(_ops(request).usage_records, q.get("cluster"), limit)
    return web.json_response({"data": records})


# -- nodes -----------------------------------------------------------------------


async def verify_key(request: web.Request) -> web.Response:
    """A node asks whether an API key its client presented is good for this cluster."""
    cluster = await require_node(request)
    state = request.app[STATE]
    data = await _body(request)
    presented, model = _str(data, "key"), _str(data, "model")
    key = await asyncio.to_thread(state.store.key_for_secret, presented) if presented else None
    now = state.clock()
    usable = key is not None and await asyncio.to_thread(key_usable, state.store, key)
    if (
        key is not None
        and key.cluster_id == cluster.id
        and usable
        and len(await asyncio.to_thread(state.store.suspended_clusters, cluster.id)) > 0
    ):
        raise Unauthorized(suspended_message(key))  # a good key: not counted as a failure
    if (
        key is None
        or key.cluster_id != cluster.id
        or key.state(now) is not KeyState.ACTIVE
        or not usable
    ):
        # Failures are limited per cluster *and* client (the node says which client
        # presented the key): one client's flood never blocks another's good key.
        source = f"{cluster.id}|{address(request)}|{_str(data, 'client') or '-'}"
        wait = state.verify_limiter.retry_after(source)
        if wait is not None:
            raise RateLimited("Too many unknown keys from this client lately.", retry_after_s=wait)
        state.verify_limiter.failed(source)
        state.counters.auth_failures.labels("verify").inc()
        if key is not None and key.cluster_id == cluster.id and usable:
            raise Unauthorized(f"The API key {key.shown} is {key.state(now).value}.")
        raise Unauthorized("Incorrect API key provided.")
    if not allows_model(key.models, model):
        raise Forbidden(
            f"The API key {key.shown} may not use the model '{model}'.", code="model_not_allowed"
        )
    state.recorder.key_used(key.id, now)
    return web.json_response(
        {
            "valid": True,
            "key_id": key.id,
            "prefix": key.shown,
            "name": key.name,
            "models": None if key.models is None else list(key.models),
            "expires_at": key.expires_at,
        }
    )


async def ingest_usage(request: web.Request) -> web.Response:
    """A node ships usage records; answered only once they are committed."""
    cluster = await require_node(request)
    state = request.app[STATE]
    if request.content_length is not None and request.content_length > MAX_API_BODY:
        raise InvalidRequest("Send at most 1000 records per batch.")
    raw = await request.content.read(MAX_API_BODY + 1)
    try:
        batch = UsageBatch.decode(raw)
    except RemoteProtocolError as exc:
        raise InvalidRequest(f"Not a usage batch: {exc}") from None
    accepted, duplicates = await asyncio.to_thread(state.store.add_usage, cluster.id, batch.records)
    state.counters.usage_ingested.labels("accepted").inc(accepted)
    state.counters.usage_ingested.labels("duplicate").inc(duplicates)
    log.debug("cluster %s: %d usage records, %d already known", cluster.name, accepted, duplicates)
    return web.json_response({"accepted": accepted, "duplicates": duplicates})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/clusters", list_clusters)
    r.add_post("/api/v1/clusters", create_cluster)
    r.add_post("/api/v1/clusters/{cluster}/rotate", rotate_cluster)
    r.add_post("/api/v1/clusters/{cluster}/rotate/finish", finish_rotation)
    r.add_post("/api/v1/keys/verify", verify_key)
    r.add_get("/api/v1/keys", list_keys)
    r.add_post("/api/v1/keys", create_key)
    r.add_get("/api/v1/keys/{key}", get_key)
    r.add_delete("/api/v1/keys/{key}", revoke_key)
    r.add_post("/api/v1/keys/{key}/revoke", revoke_key)
    r.add_post("/api/v1/keys/{key}/rotate", rotate_key)
    r.add_get("/api/v1/nodes", list_nodes)
    r.add_delete("/api/v1/nodes/{node}", remove_node)
    r.add_post("/api/v1/usage", ingest_usage)
    r.add_get("/api/v1/usage", usage)
    r.add_get("/api/v1/usage/records", usage_records)
