"""Ollama's listing endpoints on the node: ``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/version``, answered from the cluster's models (what a model is, not where).
Only language and embedding models are Ollama models: speech and image models are
neither listed nor shown.

Generation (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``)
goes through the proxy like every request (:mod:`quorum.proxy.foreign`).
``/api/ps`` lists the models some holder has loaded (or whose engine does not
say). An API key sees only the models it may use. Errors are Ollama's
``{"error": ...}`` (the ``errors`` middleware renders ``/api`` paths so).
"""

from __future__ import annotations

import json

from aiohttp import web

from quorum.errors import InvalidRequest, ModelNotFound
from quorum.fleet import Holder
from quorum.routing import resolve_alias
from quorum.server.context import CONTEXT, KEY_INFO
from quorum.translate import ollama_models


def _kind(holders: tuple[Holder, ...]) -> str | None:
    """The model's kind for Ollama: ``llm`` before ``embedding`` (a name may be held by
    services of several types); None when no holder's type is an Ollama model's."""
    kinds = {h.type.value for h in holders}
    return next((kind for kind in ollama_models.MODEL_TYPES if kind in kinds), None)


def _models(request: web.Request) -> list[tuple[str, tuple[Holder, ...]]]:
    ctx = request.app[CONTEXT]
    key = request.get(KEY_INFO)
    return [
        (name, holders)
        for name, holders in sorted(ctx.snapshot.by_model.items())
        if key is None or key.allows(name)
    ]


async def tags(request: web.Request) -> web.Response:
    pairs = [(name, kind) for name, holders in _models(request) if (kind := _kind(holders))]
    return web.json_response(ollama_models.tags(pairs))


async def ps(request: web.Request) -> web.Response:
    pairs = [
        (name, kind)
        for name, holders in _models(request)
        if (kind := _kind(holders)) and any(h.loaded is not False and h.online for h in holders)
    ]
    return web.json_response(ollama_models.ps(pairs))


async def version(request: web.Request) -> web.Response:
    return web.json_response(ollama_models.version())


async def show(request: web.Request) -> web.Response:
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("The body must be a JSON object with a 'model'.") from None
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidRequest("You must provide a model.", param="model")
    ctx = request.app[CONTEXT]
    key = request.get(KEY_INFO)
    holders = ctx.snapshot.by_model.get(resolve_alias(ctx.scheduler.aliases, name), ())
    kind = _kind(holders)
    if kind is None or (key is not None and not key.allows(name)):
        raise ModelNotFound(f"model '{name}' not found")
    return web.json_response(ollama_models.show(name, kind))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_get("/api/version", version)
    app.router.add_post("/api/show", show)
