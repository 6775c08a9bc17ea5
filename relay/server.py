"""The relay's aiohttp application: ``/tunnel``, ``/v1``, ``/api``, ``/`` (the dashboard),
``/healthz``, ``/metrics``.

The node's cluster token is checked from the upgrade request's
``Authorization`` header *before* the WebSocket upgrade: a wrong token gets a
plain 401 and never a socket, and counts as a failed attempt of its address
(``context``). Tokens are never logged. A node that sends its certificate and
a proof of its key (``quorum.secure.join``) is checked against the cluster CA
(derived from the token, as members do) and its node id bound to its key on
first join; another key for that id, or a removed node's key, gets a 403.
The public ``/v1`` is ``public``, the control plane ``api``; the ``Recorder``
task started here writes heartbeats and the relay's own usage records to the
store.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from quorum.errors import StoreError
from quorum.protocol import MAX_FRAME_SIZE
from quorum.ratelimit import FailureLimiter
from quorum.secure.cluster import token_ca_id
from quorum.secure.hop import RELAY_CERT_HEADER
from quorum.secure.join import JoinRefused
from relay import api, dashboard, dashboard_live, dashboard_nodes, public, revocation
from relay.context import (
    STATE,
    Counters,
    RelayState,
    bearer,
    check_admin_token,
    errors,
    require_member,
)
from relay.hop import HOP, Hop
from relay.hub import Hub, Link
from relay.node_keys import Binding
from relay.recorder import Recorder
from relay.store import NodeSeen, Store
from relay.transport import WebSocketTransport

log = logging.getLogger("relay.server")

METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)
PROTECT_METRICS: web.AppKey[bool] = web.AppKey("protect_metrics", bool)
CLOSE_TIMEOUT_S = 10.0


def _error(status: int, message: str, code: str) -> web.Response:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


async def tunnel(request: web.Request) -> web.StreamResponse:
    hub = request.app[STATE].hub
    # A wrong token is a 401 (raised, and shaped by the errors middleware) before any upgrade.
    remote = request.remote or "?"
    try:
        cluster, joiner = await require_member(request)
    except JoinRefused as exc:  # a valid token with a certificate that does not hold
        log.warning("refused a node's certificate from %s: %s", remote, exc)
        return _error(403, f"This node's certificate is refused: {exc}.", "node_key_refused")
    if hub.draining:
        return _error(503, "The relay is shutting down.", "draining")
    store = request.app[STATE].store
    if await asyncio.to_thread(store.suspended_clusters, cluster.id):
        # 503, not 403: the node keeps trying, and is back once the owner is enabled.
        log.warning("refused a node of suspended cluster %s from %s", cluster.name, remote)
        return _error(
            503,
            revocation.SUSPENDED[:1].upper() + revocation.SUSPENDED[1:] + ".",
            "cluster_suspended",
        )
    proven = None
    if joiner is not None:
        now = time.time()
        binding = await asyncio.to_thread(
            store.bind_node_key, cluster.id, joiner.node_id, joiner.fingerprint, now=now
        )
        if binding in (Binding.OTHER, Binding.REMOVED):
            why = (
                "another key than the one bound to this node id"
                if binding is Binding.OTHER
                else "the key of a removed node"
            )
            hub.refusals.add(cluster.id, joiner.node_id, joiner.fingerprint, remote, why)
            log.warning(
                "refused node %s of cluster %s from %s: %s",
                joiner.node_id,
                cluster.name,
                remote,
                why,
            )
            return _error(
                403,
                "This node id is bound to another key, or this node was removed.",
                "node_key_refused",
            )
        if binding is Binding.BOUND:
            log.info(
                "node %s of cluster %s bound to key %s",
                joiner.node_id,
                cluster.name,
                joiner.fingerprint[:16],
            )
        hub.bound.add((cluster.id, joiner.node_id))
        proven = joiner.node_id
    # The CA it joined with: a link of a rotated-out token is closed when its grace ends.
    joined_ca = joiner.ca_id if joiner is not None else token_ca_id(bearer(request) or "")
    # aiohttp refuses a message whose size *equals* max_msg_size, hence the + 1.
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_SIZE + 1, autoping=True, compress=False)
    hop = request.app.get(HOP)
    if hop is not None:  # what the node will trust for the public /v1's hop (relay.hop)
        ws.headers[RELAY_CERT_HEADER] = hop.identity.header_value
    await ws.prepare(request)
    link = hub.new_link(
        cluster.id,
        WebSocketTransport(ws, remote, request.transport),
        remote,
        proven=proven,
        fingerprint=None if joiner is None else joiner.fingerprint,
        ca_id=joined_ca,
    )
    try:
        await hub.serve(link)
    finally:
        await ws.close()
    return ws


async def healthz(request: web.Request) -> web.Response:
    """Ok only while the relay can serve: not draining, and its store reads whole."""
    state = request.app[STATE]
    hub = state.hub
    try:
        await asyncio.to_thread(state.store.check)
    except StoreError as exc:
        log.error("%s", exc)
        return web.json_response({"status": "store_damaged", "error": str(exc)}, status=503)
    return web.json_response(
        {"status": "draining" if hub.draining else "ok", "nodes": len(hub.nodes())},
        status=503 if hub.draining else 200,
    )


async def metrics(request: web.Request) -> web.Response:
    if request.app[PROTECT_METRICS]:
        check_admin_token(
            request, bearer(request), "/metrics needs the admin token (Authorization: Bearer ...)."
        )
    registry = request.app[METRICS]
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
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

    def mesh(n: int) -> Callable[[], float]:
        return lambda: 0.0 if hub.mesh is None else float(hub.mesh.counts()[n])

    for n, (name, doc) in enumerate(
        (
            ("quorum_relay_mesh_relays", "Other relays of the mesh heard from lately."),
            ("quorum_relay_mesh_nodes", "Nodes other relays of the mesh hold."),
            ("quorum_relay_mesh_announcements", "Announcements sent to the mesh since start."),
        )
    ):
        Gauge(name, doc, registry=registry).set_function(mesh(n))
    return registry


def build_app(
    store: Store,
    hub: Hub,
    *,
    admin_token: str | None = None,
    limiter: FailureLimiter | None = None,
    trust_forwarded: bool = False,
    max_body: int = 100 * 1024 * 1024,
    header_timeout_s: float = 300.0,
    protect_metrics: bool = False,
) -> web.Application:
    """The relay's app. The store stays the caller's to close; the hub's clock is the app's."""
    app = web.Application(middlewares=[errors], client_max_size=max_body)
    app[PROTECT_METRICS] = protect_metrics
    registry = _gauges(hub)
    recorder = Recorder(store)
    state = RelayState(
        store=store,
        hub=hub,
        recorder=recorder,
        admin_token=admin_token,
        counters=Counters(registry),
        trust_forwarded=trust_forwarded,
        max_body=max_body,
        header_timeout_s=header_timeout_s,
    )
    if limiter is not None:
        state.limiter = limiter

    def on_presence(link: Link) -> None:
        if link.node_id is not None and link.presence is not None and link.last_seen is not None:
            recorder.presence(
                NodeSeen(
                    link.cluster_id,
                    link.node_id,
                    link.name,
                    link.presence.models,
                    link.last_seen,
                )
            )

    hub.on_presence = on_presence
    # Node ids bound to a key (removed ones too): no connection without a proof may use them.
    hub.bound.update((k.cluster_id, k.node_id) for k in store.node_keys())
    app[STATE] = state
    app[METRICS] = registry
    app[HOP] = Hop()
    app.cleanup_ctx.append(_run_recorder)
    app.cleanup_ctx.append(_run_revocation)
    app.router.add_get("/tunnel", tunnel)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    dashboard.add_routes(app)
    dashboard_live.add_routes(app)
    dashboard_nodes.add_routes(app)
    api.add_routes(app)
    public.add_routes(app)
    return app


async def _run_revocation(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    task = asyncio.create_task(revocation.run(state.store, state.hub), name="relay-revocation")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _run_recorder(app: web.Application) -> AsyncIterator[None]:
    recorder = app[STATE].recorder
    task = asyncio.create_task(recorder.run(), name="relay-recorder")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await recorder.close()
    except Exception:
        log.exception("could not write the last records to the store")


def ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
