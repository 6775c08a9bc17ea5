"""The Node: wires config, engines, fleet and server; owns every background task.

Start-up order: claim the port first (so a second node fails at once, and
``/healthz`` answers "starting"), then ask the engines what they hold, then
start the embedded engine if nothing else serves, then report ready. Every
task the node spawns is named, kept in ``_tasks`` and cancelled by ``stop``.
Where it listens is ``node_sites``; how its own engines become holders, and
when the embedded engine runs, ``node_engines``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from quorum.api.headers import HOP_HEADER
from quorum.config.load import default_data_dir
from quorum.config.models import AutodetectSection, Config
from quorum.discovery import (
    PROTOCOL_VERSION,
    Advert,
    Discovery,
    cluster_discriminator,
    models_digest,
)
from quorum.discovery.peers import PeerTracker, tls_fetch
from quorum.engines.base import ServiceState, make_http_get
from quorum.engines.capacity import EngineLoad
from quorum.engines.embedded import EmbeddedEngine
from quorum.engines.manager import EngineManager
from quorum.errors import DiscoveryError, Forbidden, QuorumError
from quorum.fleet import (
    FleetEvent,
    FleetSnapshot,
    Load,
    LocalHoldersChanged,
    Route,
    apply,
)
from quorum.http import socket_factory
from quorum.keys import Credentials, KeyVerifier, relay_http_base
from quorum.node_engines import ProbeGate, embedded_engine, local_holders, start_embedded
from quorum.node_sites import open_node_site, open_ollama_site
from quorum.protocol import ModelInfo
from quorum.secure import ClusterTLS, Identity
from quorum.secure.join import join_headers
from quorum.server.app import build_app, build_runner
from quorum.server.context import NodeContext
from quorum.server.middleware import Handler, is_loopback
from quorum.server.status import local_models
from quorum.server.tunnel_edge import CoreStreamHandler
from quorum.server.upstream import close_pool
from quorum.tunnel import TunnelClient
from quorum.tunnel.loopback import LoopbackForwarder
from quorum.usage.outbox import OUTBOX_FILE, HttpShipper, Outbox

log = logging.getLogger("quorum.node")


def node_id(data_dir: Path) -> str:
    """A stable id for this machine's node, made once and kept in the data dir."""
    path = data_dir / "node_id"
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    new = uuid.uuid4().hex
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(new + "\n")
    return new


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = config.node.data_dir or default_data_dir()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._embedded: EmbeddedEngine | None = None
        self._ctx: NodeContext | None = None
        self._discovery: Discovery | None = None
        self._sharing_paused = False
        self.port = config.node.port
        self.ollama_port: int | None = None  # answering Ollama's port too, if it could

    @property
    def ctx(self) -> NodeContext:
        if self._ctx is None:
            raise QuorumError("the node is not started")
        return self._ctx

    @property
    def url(self) -> str:
        host = self.config.bind
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.port}"

    @property
    def sharing_paused(self) -> bool:
        """True between :meth:`pause_sharing` and :meth:`resume_sharing`."""
        return self._sharing_paused

    async def pause_sharing(self) -> None:
        """Stop sharing this machine with the cluster; local use keeps working. Idempotent.

        The mDNS advert is withdrawn (peers get a goodbye and stop routing here)
        and every request a peer forwards (from another address, or through the
        relay tunnel with the hop header) is refused with 403 ``sharing_paused``,
        whatever credential it carries. This node still
        sees its peers and still routes its own clients to them. May be called
        before :meth:`start`: the node then starts paused.
        """
        self._sharing_paused = True
        if self._ctx is not None:
            self._ctx.sharing_paused = True
            if self._ctx.tunnel is not None:
                self._ctx.tunnel.models_changed()  # the relay stops offering our models
        if self._discovery is not None:
            await self._discovery.pause()
        log.info("sharing paused: only this machine may use the node")

    async def resume_sharing(self) -> None:
        """Undo :meth:`pause_sharing`: advertise again and answer peers. Idempotent."""
        self._sharing_paused = False
        if self._ctx is not None:
            self._ctx.sharing_paused = False
            if self._ctx.tunnel is not None:
                self._ctx.tunnel.models_changed()
        if self._discovery is not None:
            await self._discovery.resume()
        log.info("sharing resumed")

    @web.middleware
    async def _sharing_gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """While sharing is paused, only this machine's own clients are served.

        A request forwarded by a peer is refused whether it comes over the LAN (not
        loopback) or through the relay tunnel (loopback, but marked as a hop).
        """
        forwarded = not is_loopback(request.remote) or HOP_HEADER in request.headers
        if self._sharing_paused and forwarded:
            raise Forbidden(
                "This node has paused sharing; only its own machine may use it now.",
                code="sharing_paused",
            )
        return await handler(request)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        cfg = self.config
        nid = node_id(self.data_dir)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, ttl_dns_cache=300, socket_factory=socket_factory
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        self._ctx = ctx = NodeContext(
            config=cfg,
            node_id=nid,
            session=session,
            snapshot=FleetSnapshot(node_id=nid, node_name=cfg.node.name),
            sharing_paused=self._sharing_paused,
        )
        try:
            await asyncio.to_thread(self._secure, ctx)
            await self._serve(ctx)
            get = make_http_get(session)
            manager = EngineManager(
                cfg.all_services(),
                self._autodetect(),
                get,
                self._on_services,
                ProbeGate(ctx),
                on_load=self._on_engine_load,
            )
            await manager.refresh()
            await self._maybe_embedded(manager)
        except BaseException:
            await self.stop()
            raise
        self._spawn(manager.run(), "engine-refresh")
        try:
            await self._start_lan(ctx)
            self._start_tunnel(ctx)
        except BaseException:
            await self.stop()
            raise
        ctx.ready = True
        log.info(
            "node %s ready on %s/v1 with %d model(s)",
            cfg.node.name,
            self.url,
            len(ctx.snapshot.by_model),
        )

    def _autodetect(self) -> AutodetectSection:
        """What to probe for engines: never the Ollama port this node answers on itself."""
        section = self.config.autodetect
        port = self.ollama_port
        if port is None:
            return section
        kept = tuple(t for t in section.targets if urlsplit(t.url).port != port)
        return section.model_copy(update={"targets": kept})

    def _secure(self, ctx: NodeContext) -> None:
        """This node's identity key (made on first start) and, in a cluster, its TLS."""
        ctx.identity = identity = Identity.load_or_create(self.data_dir)
        cluster = self.config.cluster
        if cluster.token is not None:
            ctx.fingerprint = cluster_discriminator(cluster.token)
            ctx.tls = ClusterTLS(
                identity, ctx.node_id, cluster.token, self.data_dir, cluster.previous_tokens
            )

    async def _serve(self, ctx: NodeContext) -> None:
        app = build_app(ctx)
        app.middlewares.append(self._sharing_gate)  # innermost: errors shape its refusals
        self._runner = runner = build_runner(app)
        await runner.setup()
        bind = self.config.bind
        node = self.config.node
        tls = ctx.tls.server if ctx.tls is not None else None
        self.port = await open_node_site(runner, bind, node, tls)
        ctx.port, ctx.bind = self.port, bind
        if node.ollama_port is not None and await open_ollama_site(runner, node.ollama_port):
            self.ollama_port = node.ollama_port

    async def _maybe_embedded(self, manager: EngineManager) -> None:
        engine = embedded_engine(self.config.embedded, self.data_dir, self.ctx.session, manager)
        if engine is None:
            return
        self._embedded = engine
        await start_embedded(engine, manager)
        self._spawn(engine.watch(manager.set_embedded), "embedded-engine")

    async def _start_lan(self, ctx: NodeContext) -> None:
        """With a cluster token: advertise over mDNS, find peers, keep their holders current."""
        tls, identity = ctx.tls, ctx.identity
        if tls is None or identity is None or ctx.fingerprint is None:
            return
        if not self.config.discovery.enabled:
            return
        tracker = PeerTracker(tls_fetch(ctx.session, tls.client), self._on_fleet)
        advert = Advert(
            version=PROTOCOL_VERSION,
            node_id=ctx.node_id,
            node_name=ctx.name,
            port=self.port,
            cluster=ctx.fingerprint,
            identity=identity.short,
            models_digest=self._digest(),
        )
        interfaces = self.config.discovery.interfaces or None
        discovery = Discovery(advert, tracker.handle, interfaces=interfaces)
        if self._sharing_paused:
            await discovery.pause()  # before start: it never advertises
        await discovery.start()
        self._discovery = discovery
        ctx.peers = tracker.views
        self._spawn(tracker.run(), "lan-peers")
        log.info("LAN discovery on %s", ", ".join(discovery.addresses) or "no interface")

    def _start_tunnel(self, ctx: NodeContext) -> None:
        """With a relay URL: keep the tunnel up for peers on other networks."""
        url, token = self.config.relay.url, self.config.cluster.token
        if url is None or token is None:
            return
        # Streams the relay opens enter the proxy core directly (the node's read-only
        # JSON is still asked of its own server on loopback).
        fallback = LoopbackForwarder(
            ctx.session, f"http://127.0.0.1:{self.port}", token, ctx.max_body_bytes
        )
        ctx.tunnel = TunnelClient(
            url=url,
            token=token,
            node_id=ctx.node_id,
            node_name=ctx.name,
            on_fleet=self._on_fleet,
            local_models=self._model_infos,
            max_body=ctx.max_body_bytes,
            serve_stream=CoreStreamHandler(ctx, fallback),
            tls=ctx.tls,  # node-to-node streams: TLS between the two nodes, the relay pipes it
            other_urls=self.config.relay.urls,  # the same group's relays, moved to in turn
            on_revoked=lambda: ctx.keys.forget() if ctx.keys is not None else None,
        )
        self._spawn(ctx.tunnel.run(), "relay-tunnel")
        tunnel = ctx.tunnel

        def http_base() -> str:  # the relay the tunnel is on now: it moves between relays
            return relay_http_base(tunnel.relay_url)

        # The relay hears who this node is from its certificate and a fresh proof, as at the
        # tunnel's join: the token itself never travels (a node without TLS sends it).
        tls = ctx.tls
        credentials: str | Credentials = (
            token if tls is None else (lambda: join_headers(tls, time.time()))
        )
        ctx.keys = KeyVerifier(http_base, credentials, ctx.session)
        ctx.outbox = Outbox(
            self.data_dir / OUTBOX_FILE, HttpShipper(http_base, credentials, ctx.session)
        )
        self._spawn(ctx.outbox.run(), "usage-outbox")

    def _model_infos(self) -> list[ModelInfo]:
        if self._sharing_paused:
            return []  # paused: nothing is offered to the cluster
        return local_models(self.ctx)

    def _digest(self) -> str:
        local = self.ctx.snapshot.local()
        return models_digest(f"{h.model}|{h.type.value}|{h.service}" for h in local if h.online)

    def _on_fleet(self, event: FleetEvent) -> None:
        self.ctx.snapshot = apply(self.ctx.snapshot, event)
        self._fleet_changed()

    def _fleet_changed(self) -> None:
        ctx = self.ctx
        ctx.recent_models.saw(ctx.snapshot.by_model, time.monotonic())
        limits = {
            (ctx.node_id, s.name, Route.LOCAL): s.max_concurrency
            for s in self.config.all_services()
            if s.max_concurrency
        }
        ctx.scheduler.fleet_changed(ctx.snapshot, limits)

    def _on_engine_load(self, service: str, load: EngineLoad) -> None:
        """A local engine published its load (every client's requests, running and queued)."""
        key = (self.ctx.node_id, service, Route.LOCAL)
        self.ctx.scheduler.engine_reported(key, Load(load.running, load.queued))

    def _on_services(self, states: tuple[ServiceState, ...]) -> None:
        ctx = self.ctx
        ctx.services = states
        holders = local_holders(states, ctx.node_id, ctx.name)
        ctx.snapshot = apply(ctx.snapshot, LocalHoldersChanged(holders))
        self._fleet_changed()
        if ctx.tunnel is not None:
            ctx.tunnel.models_changed()
        discovery = self._discovery
        if discovery is not None and discovery.advert.models_digest != self._digest():
            advert = replace(discovery.advert, models_digest=self._digest())
            self._spawn(discovery.update(advert), "advert-update")

    async def stop(self) -> None:
        if self._discovery is not None:
            # Goodbye first, so peers stop routing here before the port closes.
            discovery, self._discovery = self._discovery, None
            try:
                await discovery.close()
            except DiscoveryError as exc:
                log.warning("discovery did not close cleanly: %s", exc)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._embedded is not None:
            await self._embedded.stop()
        if self._ctx is not None and self._ctx.outbox is not None:
            self._ctx.outbox.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._ctx is not None:
            close_pool(self._ctx.session)
            await self._ctx.session.close()
