"""The relay's aiohttp application: ``/tunnel`` for nodes, ``/healthz``, ``/metrics``.

The node's cluster token is checked from the upgrade request's
``Authorization`` header *before* the WebSocket upgrade: a wrong token gets a
plain 401 and never a socket. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from quorum.protocol import MAX_FRAME_SIZE
from relay.hub import Hub
from relay.store import Store

log = logging.getLogger("relay.server")

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)


def _error(status: int, message: str, code: str) -> web.Response:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def tunnel(request: web.Request) -> web.StreamResponse:
    hub, store = request.app[HUB], request.app[STORE]
    token = bearer(request)
    cluster = await asyncio.to_thread(store.cluster_for_token, token) if token else None
    if cluster is None:
        # Constant work either way; the token itself is never echoed or logged.
        hmac.compare_digest(b"x", b"y")
        return _error(
            401, "A valid cluster token is required (Authorization: Bearer ...).", "invalid_token"
        )
    if hub.draining:
        return _error(503, "The relay is shutting down.", "draining")
    # aiohttp refuses a message whose size *equals* max_msg_size, hence the + 1.
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_SIZE + 1, autoping=True, compress=False)
    await ws.prepare(request)
    frames: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def close() -> None:
        await ws.close()

    link = hub.new_link(cluster.id, ws.send_bytes, close, request.remote or "?")
    serving = asyncio.create_task(hub.serve(link, frames), name=f"relay-link-{request.remote}")
    try:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                frames.put_nowait(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                log.warning("node %s sent a text message; closing", link.name or link.remote)
                break
            elif msg.type is aiohttp.WSMsgType.ERROR:
                log.warning(
                    "node %s: websocket error: %s", link.name or link.remote, ws.exception()
                )
        frames.put_nowait(None)
        await serving
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
        await ws.close()
    return ws


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {"status": "draining" if hub.draining else "ok", "nodes": len(hub.nodes())},
        status=503 if hub.draining else 200,
    )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


async def index(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.Response(
        text=f"Quorum relay: {len(hub.nodes())} node(s) connected.\n", content_type="text/plain"
    )


def _gauges(hub: Hub) -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("quorum_relay_connections", "Open node tunnels.", registry=registry).set_function(
        lambda: hub.connections
    )
    Gauge("quorum_relay_nodes", "Nodes registered (said hello).", registry=registry).set_function(
        lambda: len(hub.nodes())
    )
    Gauge(
        "quorum_relay_streams", "Streams piped between nodes now.", registry=registry
    ).set_function(lambda: hub.open_streams)
    Gauge(
        "quorum_relay_streams_piped", "Streams piped since start.", registry=registry
    ).set_function(lambda: hub.streams_piped)
    Gauge(
        "quorum_relay_buffered_bytes",
        "Bytes held between a node's stream and the other end's credit.",
        registry=registry,
    ).set_function(lambda: hub.buffered_bytes)
    return registry


def build_app(store: Store, hub: Hub) -> web.Application:
    app = web.Application()
    app[STORE] = store
    app[HUB] = hub
    app[METRICS] = _gauges(hub)
    app.router.add_get("/tunnel", tunnel)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    return app


def ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
