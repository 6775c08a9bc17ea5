"""Read-only endpoints: ``/v1/models``, ``/quorum/v1/status``, ``/healthz``, ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from quorum import __version__
from quorum.errors import Forbidden, ModelNotFound
from quorum.fleet import Holder
from quorum.protocol import ModelInfo
from quorum.routing import limit_of, listed, resolve_alias
from quorum.server.context import CONTEXT, KEY_INFO, NodeContext


def _holder_json(h: Holder) -> dict[str, Any]:
    return {
        "node": h.node_name,
        "node_id": h.node_id,
        "route": h.route.value,
        "service": h.service,
        "engine": h.engine.value,
        "loaded": h.loaded,
        "online": h.online,
    }


def _model_json(name: str, holders: tuple[Holder, ...], created: int) -> dict[str, Any]:
    first = holders[0]
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": first.node_name,
        "quorum": {
            "type": first.type.value,
            "types": sorted({h.type.value for h in holders}),
            "holders": [_holder_json(h) for h in holders],
        },
    }


def models_json(ctx: NodeContext) -> list[dict[str, Any]]:
    created = int(ctx.started_at)
    by_model = ctx.snapshot.by_model
    models = [_model_json(name, holders, created) for name, holders in sorted(by_model.items())]
    for alias, target in listed(ctx.scheduler.aliases, by_model):
        entry = _model_json(alias, by_model[target], created)
        entry["quorum"]["alias_of"] = target
        models.append(entry)
    return models


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def not_for_keys(handler: Handler) -> Handler:
    """Refuse a caller admitted by an API key: this shows the node's inventory (services,
    addresses, peers, recent requests), which is the operator's and the cluster's only."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.get(KEY_INFO) is not None:
            raise Forbidden(
                "An API key may use models, not read this node's status; ask its owner.",
                code="key_not_allowed",
            )
        return await handler(request)

    return guarded


def _public(model: dict[str, Any]) -> dict[str, Any]:
    """A model as an API key's holder sees it: OpenAI's fields, none of the fleet's."""
    return {k: model[k] for k in ("id", "object", "created", "owned_by") if k in model}


async def list_models(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    models = models_json(ctx)
    key = request.get(KEY_INFO)
    if key is not None:  # a key sees only what it may use, and nothing of the fleet
        models = [_public(m) for m in models if key.allows(m["id"])]
    return web.json_response({"object": "list", "data": models})


async def get_model(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    name = request.match_info["model"]
    key = request.get(KEY_INFO)
    holders = ctx.snapshot.by_model.get(resolve_alias(ctx.scheduler.aliases, name))
    if not holders or (key is not None and not key.allows(name)):
        raise ModelNotFound(f"The model '{name}' does not exist on any node of this cluster.")
    model = _model_json(name, holders, int(ctx.started_at))
    return web.json_response(model if key is None else _public(model))


def _relay_json(ctx: NodeContext) -> dict[str, Any]:
    if ctx.tunnel is None:
        return {"url": ctx.config.relay.url, "connected": False}
    st = ctx.tunnel.status
    return {
        "url": st.url,
        "connected": st.connected,
        "since": st.since,
        "last_error": st.last_error,
        "stopped": st.stopped,
        "peers": st.peers,
    }


def _identity_json(ctx: NodeContext) -> dict[str, str] | None:
    """This node's identity key: what TLS clients pin (curl --pinnedpubkey takes ``pin``)."""
    identity = ctx.identity
    if identity is None:
        return None
    return {"fingerprint": identity.fingerprint, "short": identity.short, "pin": identity.pin}


def status_json(ctx: NodeContext) -> dict[str, Any]:
    cfg = ctx.config
    return {
        "node": {
            "id": ctx.node_id,
            "name": ctx.name,
            "version": __version__,
            "url": f"http://127.0.0.1:{ctx.port}/v1",
            "bind": ctx.bind,
            "started_at": ctx.started_at,
            "uptime_s": round(time.time() - ctx.started_at, 1),
            "ready": ctx.ready,
            "identity": _identity_json(ctx),
        },
        "cluster": {"joined": cfg.cluster.token is not None, "fingerprint": ctx.fingerprint},
        "sharing": {"paused": ctx.sharing_paused},
        "relay": _relay_json(ctx),
        "services": [
            {
                "name": s.name,
                "type": s.type.value,
                "engine": s.engine.value,
                "url": s.root,
                "up": s.up,
                "detected": s.detected,
                "error": s.error,
                "features": sorted(s.features),
                "models": [
                    {"id": m.name, "type": m.type.value, "loaded": m.loaded} for m in s.models
                ],
            }
            for s in ctx.services
        ],
        "models": models_json(ctx),
        "peers": [asdict(p) for p in ctx.peers()],
        "cooling": cooling_json(ctx),
        "recent": [asdict(r) for r in list(ctx.recent)[-20:]],
        "queues": queues_json(ctx),
        "usage": _usage_json(ctx),
    }


def _usage_json(ctx: NodeContext) -> dict[str, Any] | None:
    """The usage outbox's health (None without a relay): records held in memory, and why."""
    outbox = ctx.outbox
    if outbox is None:
        return None
    return {"held": outbox.held, "dropped": outbox.dropped, "problem": outbox.problem}


def local_models(ctx: NodeContext) -> list[ModelInfo]:
    """What this node itself holds (never what it learned from peers), in the one presence
    format peers read over the LAN and through the relay."""
    sched = ctx.scheduler
    health, now = sched.health, sched.clock()
    local = ctx.snapshot.local()
    out = []
    for h in local:
        if not h.online:
            continue
        load = sched.load_of(h)
        out.append(
            ModelInfo(
                h.model,
                h.type.value,
                h.service,
                tuple(sorted(h.features)),
                engine=h.engine.value,
                loaded=h.loaded,
                limit=limit_of(health, h, now),
                in_flight=load.in_flight,
                queued=load.queued,
                service_ms=round(load.service_s * 1000),
                wait_ms=round(sched.wait_of(local, h.model) * 1000),
            )
        )
    return out


def local_json(ctx: NodeContext) -> dict[str, Any]:
    """``/quorum/v1/local``: this node and its own models, for LAN peers."""
    return {
        "node": {"id": ctx.node_id, "name": ctx.name},
        "models": [m.to_json() for m in local_models(ctx)],
    }


def queues_json(ctx: NodeContext) -> list[dict[str, Any]]:
    """Each model's requests waiting at this node, and how long one more would wait."""
    return [
        {"model": q.model, "depth": q.depth, "estimated_wait_s": round(q.estimated_wait_s, 3)}
        for q in ctx.scheduler.queues()
    ]


def cooling_json(ctx: NodeContext) -> list[dict[str, Any]]:
    """Holders skipped after repeated failures, and when they are tried again (wall clock)."""
    now_wall, now = time.time(), ctx.scheduler.clock()
    names = {h.node_id: h.node_name for h in ctx.snapshot.holders}
    return [
        {
            "node": names.get(c.node_id, c.node_id),
            "node_id": c.node_id,
            "service": c.service,
            "route": c.route.value,
            "state": c.circuit.value,
            "until": None if c.until is None else now_wall + (c.until - now),
            "consecutive_failures": c.consecutive_failures,
        }
        for c in ctx.scheduler.cooling()
    ]


async def local(request: web.Request) -> web.Response:
    return web.json_response(local_json(request.app[CONTEXT]))


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_json(request.app[CONTEXT]))


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response(
        {"status": "ok" if ctx.ready else "starting", "node": ctx.name},
        status=200 if ctx.ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    counts: dict[str, int] = {}
    for h in ctx.snapshot.holders:
        counts[h.route.value] = counts.get(h.route.value, 0) + 1
    for route in ("local", "lan", "relay"):
        ctx.metrics.models.labels(route).set(counts.get(route, 0))
    if ctx.outbox is not None:
        ctx.metrics.usage_held.set(ctx.outbox.held)
        ctx.metrics.usage_dropped.set(ctx.outbox.dropped)
    ctx.metrics.queue_depth.clear()
    ctx.metrics.queue_wait.clear()
    for q in queues_json(ctx):
        ctx.metrics.queue_depth.labels(q["model"]).set(q["depth"])
        ctx.metrics.queue_wait.labels(q["model"]).set(q["estimated_wait_s"])
    ctx.metrics.cooling.clear()
    for c in cooling_json(ctx):
        ctx.metrics.cooling.labels(c["node"], c["service"], c["route"]).set(c["until"] or 0)
    return web.Response(
        body=ctx.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )
