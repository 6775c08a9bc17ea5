"""The node's aiohttp application: routes, middlewares, and the runner that serves it."""

from __future__ import annotations

import importlib.resources

from aiohttp import web

from quorum.routing import ENDPOINTS
from quorum.server import events, ollama_api, proxy, status
from quorum.server.context import CONTEXT, NodeContext
from quorum.server.middleware import auth, errors


async def dashboard(request: web.Request) -> web.Response:
    page = importlib.resources.files("quorum.server").joinpath("static/index.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


def build_app(ctx: NodeContext) -> web.Application:
    app = web.Application(middlewares=[errors, auth], client_max_size=ctx.max_body_bytes)
    app[CONTEXT] = ctx
    for path, endpoint in ENDPOINTS.items():
        app.router.add_post(path, proxy.handler(endpoint))
    ollama_api.add_routes(app)
    app.router.add_get("/v1/models", status.list_models)
    app.router.add_get("/v1/models/{model:.+}", status.get_model)
    operator = status.not_for_keys  # the node's inventory is not an API key's to read
    app.router.add_get("/quorum/v1/status", operator(status.status))
    app.router.add_get("/quorum/v1/local", operator(status.local))
    app.router.add_get("/healthz", status.healthz)
    app.router.add_get("/metrics", operator(status.metrics))
    app.router.add_get("/", operator(dashboard))
    events.setup(app)
    return app


def build_runner(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a client that disconnects cancels its handler, which closes
    # the upstream request, so the engine stops generating for nobody.
    # auto_decompress off: a compressed body is refused (quorum.api.body), never inflated.
    return web.AppRunner(app, handler_cancellation=True, access_log=None, auto_decompress=False)
