"""The node's tunnel to the relay: connect, keep alive, reconnect, carry streams.

- Connects to ``relay.url`` with the cluster token in the upgrade's
  ``Authorization`` header (never in the URL, never logged; ``dial``).
- Reconnects forever with the protocol's jittered backoff; a 401 or 403
  stops it (the token is wrong: retrying cannot help) and says so. Given
  several relays (``other_urls``: relays sharing one store and NATS), each
  reconnect after a loss goes to the next one (``relays.RelayChoice``), so a
  dead or draining relay's nodes move to another within the backoff; a relay
  that drains (GOAWAY SHUTDOWN) is left at once for the next, while the
  streams still running on it finish there.
- Pings about every 10 s; a relay silent for 25 s is dead: the socket is
  closed, every stream on it fails at once (visibly), and it reconnects
  (``quorum.link.Pump``).
- Given ``on_revoked``, it announces ``revocations`` in its HELLO and calls it when
  the relay says credentials of the cluster stopped counting (REVOCATION: a key
  revoked, a member removed, a user disabled), and on every connection (what was
  revoked while no tunnel was up was never said): the node's key checks start over.
- Sends its model list (presence) on connect, on every change and every 30 s;
  the relay's presence of other nodes becomes ``route=relay`` holders
  (``peers``).
- ``request`` sends a request to another node through the relay and returns
  its answer as an upstream (``streams.TunnelResponse``; ``outgoing.RelayRequests``).
- A stream the relay opens is handed to ``serve_stream``; by default that is
  ``loopback.LoopbackForwarder``, an HTTP request to this node's own server
  with the hop header: the same path a LAN peer's request takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from quorum.errors import ApiError, AuthRefused, TransportClosed
from quorum.fleet import FleetEvent
from quorum.link import EndReason, Keepalive, Pump, Transport, TunnelStream
from quorum.protocol import (
    REVOCATIONS,
    Connection,
    Event,
    GoAwayReason,
    GoAwayReceived,
    Limits,
    ModelInfo,
    Presence,
    PresenceReceived,
    Reconnect,
    RequestHead,
    ResetCode,
    RevocationReceived,
    Role,
)
from quorum.secure import ClusterTLS
from quorum.secure.hop import HOP_CAPABILITY, HOP_PATH
from quorum.tunnel import e2e
from quorum.tunnel.dial import dial_relay
from quorum.tunnel.hops import HopContexts
from quorum.tunnel.loopback import LoopbackForwarder
from quorum.tunnel.outgoing import RelayRequests
from quorum.tunnel.peers import RelayPeers
from quorum.tunnel.relays import RelayChoice, relay_list
from quorum.tunnel.streams import TunnelResponse

log = logging.getLogger("quorum.tunnel")

PRESENCE_INTERVAL_S = 30.0
# What this node lets the relay open towards it.
NODE_LIMITS = Limits(max_streams=256, max_opens_per_second=1000.0)

StreamHandler = Callable[[RequestHead, TunnelStream], Awaitable[None]]
"""Serves one stream the relay opened to this node; see ``TunnelClient``."""
Dial = Callable[[], Awaitable[Transport]]


@dataclass
class TunnelStatus:
    url: str
    connected: bool = False
    since: float | None = None
    last_error: str | None = None
    stopped: bool = False
    peers: int = 0


class TunnelClient:
    """Keeps this node's tunnel to the relay and carries streams both ways.

    ``serve_stream(head, stream)`` serves each stream the relay opens to this
    node (a request from another node, or from an app on the relay's ``/v1``).
    It runs in a task of its own, owned by the client, and:

    - gets the request head (method, path with query, headers) and reads the
      request body from ``stream`` (``receive_some`` or ``async for``, until
      it ends); a body read chunk by chunk returns credit as it goes;
    - answers with ``stream.send_response(ResponseHead(status, headers))``,
      then the body (``await stream.send_all(chunk)``, which waits for the
      relay's credit), then ``await stream.send_eof()``; or kills the stream
      with ``stream.reset(code, message)``;
    - is cancelled if the stream dies under it (the far client went away, or
      the tunnel was lost): stop the work there, the engine's included (the
      stream's ``listener`` is the client's, for this);
    - if it raises, the stream is reset INTERNAL; if it returns without
      ending its answer, the same.

    The default forwards over loopback HTTP (``LoopbackForwarder``, needing
    ``session`` and ``local_url``); the proxy core is to be plugged in here.
    ``dial`` (default: the WebSocket to ``url``) and ``rng`` are for tests.
    """

    def __init__(
        self,
        *,
        url: str,
        token: str,
        node_id: str,
        node_name: str,
        on_fleet: Callable[[FleetEvent], None],
        local_models: Callable[[], Sequence[ModelInfo]],
        max_body: int,
        local_url: str = "",
        session: aiohttp.ClientSession | None = None,
        serve_stream: StreamHandler | None = None,
        dial: Dial | None = None,
        other_urls: Sequence[str] = (),
        dial_url: Callable[[str], Awaitable[Transport]] | None = None,
        limits: Limits | None = None,
        ping_interval: float = 10.0,
        rng: random.Random | None = None,
        tls: ClusterTLS | None = None,
        on_revoked: Callable[[], None] | None = None,
    ) -> None:
        if serve_stream is None:
            if session is None:
                raise ValueError("TunnelClient needs serve_stream, or a session to forward with")
            serve_stream = LoopbackForwarder(session, local_url, token, max_body)
        self._relays = RelayChoice(relay_list(url, other_urls))
        self._node_id = node_id
        self._name = node_name
        self._local_models = local_models
        self._on_revoked = on_revoked
        self._serve_stream = serve_stream
        # ``dial`` (tests): one transport whatever the URL; ``dial_url`` (tests): per URL.
        if dial_url is None and dial is not None:
            dial_url = _ignoring_url(dial)
        self._dial_url = dial_url or functools.partial(_dial_relay, token=token, tls=tls)
        self._limits = limits or NODE_LIMITS
        self._keepalive = Keepalive(interval=ping_interval, dead_after=ping_interval * 2.5)
        self._rng = rng or random.Random()
        self.status = TunnelStatus(url)
        self._pump: Pump | None = None
        self._peers = RelayPeers(node_id, on_fleet)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tls = tls
        # End to end with other nodes: kept channels and TLS sessions, per node.
        self._channels = e2e.Channels(tls.client) if tls is not None else None
        self._requests = RelayRequests(lambda: self._pump, self._channels)
        self._hops = HopContexts(None, None)  # TLS with relays (their public /v1)
        self._move = asyncio.Event()  # the relay drains: move on (set per connection)
        self._generation = 0  # connections made: events of an older one are ignored

    # -- public -------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled (or the relay refuses the token)."""
        loop = asyncio.get_running_loop()
        state = Reconnect()
        first = True
        try:
            while True:
                delay, state = state.next_delay(self._rng)
                if not first:
                    await asyncio.sleep(delay)
                first = False
                self.status.url = self.relay_url
                try:
                    opened_at = await self._connect_once()
                except AuthRefused as exc:
                    self.status.stopped = True
                    self.status.last_error = str(exc)
                    log.error("relay %s: %s; not reconnecting", self.relay_url, exc)
                    return
                except TransportClosed as exc:
                    self.status.last_error = str(exc)
                    log.warning("relay %s unreachable: %s", self.relay_url, exc)
                    opened_at = None
                if opened_at is not None:
                    state = state.connected(opened_at)
                state = state.disconnected(loop.time())
                self._relays = self._relays.moved_on()  # (the same one, if it is the only one)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def relay_url(self) -> str:
        """The relay dialled now (or last)."""
        return self._relays.current

    def models_changed(self) -> None:
        """This node's model list changed: tell the relay now."""
        if self._pump is not None:
            self._pump.send_presence(self._presence())

    async def request(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
    ) -> TunnelResponse | e2e.SecureResponse:
        """Send a request to ``node_id`` through the relay and wait for its response head
        (``outgoing.RelayRequests``)."""
        return await self._requests.request(node_id, method, path, headers, body, header_timeout_s)

    # -- one connection -----------------------------------------------------

    async def _connect_once(self) -> float:
        """One connection, from dialling to its end; returns when it opened."""
        transport = await self._dial_url(self.relay_url)
        relay_cert = getattr(transport, "relay_cert", None)
        # The relay's public /v1 reaches this node in TLS with the relay that just answered.
        self._hops = HopContexts(self._tls, relay_cert)
        conn = Connection(Role.NODE, self._limits)
        capabilities = ("presence", "streams") + ((HOP_CAPABILITY,) if self._hops.own else ())
        if self._on_revoked is not None:
            capabilities += (REVOCATIONS,)
        conn.send_hello(self._node_id, capabilities=capabilities)
        conn.send_presence(self._presence())
        self._generation += 1
        generation = self._generation

        def on_event(event: Event) -> None:
            if self._generation == generation:  # not a tunnel left for another relay
                self._on_event(event)

        pump = Pump(
            conn,
            transport,
            on_event=on_event,
            on_stream=self._on_stream,
            peer="the relay",
            keepalive=self._keepalive,
            rng=self._rng,
            name="tunnel",
        )
        opened_at = asyncio.get_running_loop().time()
        self._pump = pump
        self.status.connected, self.status.since, self.status.last_error = True, time.time(), None
        log.info("connected to relay %s", self.relay_url)
        if self._on_revoked is not None:
            self._on_revoked()  # what was revoked while no tunnel was up was never said
        heartbeat = asyncio.create_task(self._heartbeat(pump), name="tunnel-presence")
        move = self._move = asyncio.Event()
        run = asyncio.create_task(pump.run(), name="tunnel-pump")
        moving = asyncio.create_task(move.wait(), name="tunnel-move")
        try:
            await asyncio.wait((run, moving), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            raise
        finally:
            heartbeat.cancel()
            moving.cancel()
            await asyncio.gather(heartbeat, moving, return_exceptions=True)
            if run.done():
                self._lost(pump)
        if not run.done():
            # The relay drains: the next connection starts now; this one ends by itself once
            # its running streams are done (the relay closes it).
            log.info("relay %s is draining: moving on; its running streams finish", self.relay_url)
            self._lost(pump)
            self._spawn(self._finish(run), "tunnel-draining")
            return opened_at
        ended = run.result()
        if ended.reason is not EndReason.STOPPED:
            self.status.last_error = ended.message
            log.warning("relay %s: %s; reconnecting", self.relay_url, ended.message)
        return opened_at

    async def _heartbeat(self, pump: Pump) -> None:
        while True:
            await asyncio.sleep(PRESENCE_INTERVAL_S)
            pump.send_presence(self._presence())

    @staticmethod
    async def _finish(run: asyncio.Task[Any]) -> None:
        try:
            await run
        finally:
            run.cancel()

    def _lost(self, pump: Pump) -> None:
        """The connection is over (its streams failed already), or is being left: forget the
        relay's peers (the next relay tells them again)."""
        if self._pump is not pump:
            return
        self._pump = None
        if self._channels is not None:
            self._channels.forget_all()  # their streams died with the connection
        self.status.connected = False
        self._peers.forget_all()
        self.status.peers = 0

    def _on_event(self, event: Event) -> None:
        match event:
            case PresenceReceived(presence):
                self._peers.heard(presence)
                self.status.peers = len(self._peers)
            case RevocationReceived(revocation) if self._on_revoked is not None:
                log.info("relay: %s; API keys are checked again", revocation.message or "revoked")
                self._on_revoked()
            case GoAwayReceived(goaway):
                if self._channels is not None:
                    self._channels.close_all()
                if goaway.reason is GoAwayReason.SHUTDOWN and len(self._relays.urls) > 1:
                    self._move.set()
                log.info(
                    "relay says goodbye (%s): reconnecting", goaway.message or goaway.reason.name
                )

    def _presence(self) -> Presence:
        return Presence(self._node_id, tuple(self._local_models()), True, 0, self._name)

    # -- serving a stream the relay opened ------------------------------------

    def _on_stream(self, stream: TunnelStream) -> None:
        task = self._spawn(self._serve(stream), f"tunnel-serve-{stream.id}")

        def on_change(s: TunnelStream) -> None:
            if s.reset_info is not None and not task.done():
                task.cancel()  # the far client went away: stop the local engine too

        stream.listener = on_change

    async def _serve(self, stream: TunnelStream) -> None:
        try:
            if self._tls is not None and stream.head.path == e2e.E2E_PATH:
                await e2e.serve(
                    stream, self._tls.member_server, self._serve_stream, idle_s=e2e.SERVER_IDLE_S
                )
            elif stream.head.path == HOP_PATH and (hop := self._hops.for_head(stream.head)):
                await e2e.serve(stream, hop, self._serve_stream)  # a relay's, in TLS
            else:
                await self._serve_stream(stream.head, stream)
            if not stream.sent_eof:
                stream.reset(ResetCode.INTERNAL, "the answer was left unfinished")
        except ApiError as exc:
            if stream.reset_info is None:  # not the stream's own error: the handler's
                log.warning("serving a stream from the relay failed: %s", exc)
                stream.reset(ResetCode.INTERNAL, f"serving failed: {type(exc).__name__}")
        except Exception as exc:
            log.exception("serving a stream from the relay failed")
            stream.reset(ResetCode.INTERNAL, f"serving failed: {type(exc).__name__}")
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _dial_relay(url: str, *, token: str, tls: ClusterTLS | None) -> Transport:
    return await dial_relay(url, token, tls)


def _ignoring_url(dial: Dial) -> Callable[[str], Awaitable[Transport]]:
    async def dial_any(_url: str) -> Transport:
        return await dial()

    return dial_any
