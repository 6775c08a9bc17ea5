"""LAN peers: from discovery events and HTTP fetches to fleet events.

A peer found over mDNS is fetched at once (``GET /quorum/v1/local`` over
mutual TLS: the peer must present a certificate of the cluster CA naming the
node id of its advert and carrying the identity key the advert names; we
present ours, and no token is sent); it is then fetched again every 30 s (the heartbeat) and
whenever its advert's model digest changes. The pure presence rules in
:mod:`quorum.discovery.presence` decide who is online; this module only does
the fetching and turns the outcome into ``PeerHoldersChanged`` (online, with
its models) or ``PeerGone`` (goodbye, refused, or silent for 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from quorum.discovery import presence as pr
from quorum.discovery.events import DiscoveryEvent, PeerFound, PeerRemoved, PeerUpdated
from quorum.discovery.txt import Advert
from quorum.errors import PeerError, PeerRefused, RemoteProtocolError
from quorum.fleet import FleetEvent, Holder, PeerGone, PeerHoldersChanged, Route
from quorum.fleet.remote import peer_holders
from quorum.protocol import ModelInfo
from quorum.secure import node_dns_name

log = logging.getLogger("quorum.discovery.peers")

LOCAL_PATH = "/quorum/v1/local"


@dataclass(frozen=True, slots=True)
class PeerListing:
    """What a peer says it holds itself (never what it learned from others)."""

    node_id: str
    node_name: str
    models: tuple[ModelInfo, ...]


def parse_listing(data: Any) -> PeerListing:
    """``/quorum/v1/local``'s JSON -> PeerListing; raises PeerError on anything malformed."""
    try:
        node = data["node"]
        models = tuple(ModelInfo.from_json(m) for m in data["models"])
        return PeerListing(str(node["id"]), str(node["name"]), models)
    except (KeyError, TypeError, ValueError, RemoteProtocolError) as exc:
        raise PeerError(f"the peer's model list is malformed ({exc!r})") from None


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as the status page shows it."""

    node_id: str
    name: str
    addresses: tuple[str, ...]
    port: int
    online: bool
    last_answer_age_s: float | None
    models: tuple[str, ...]


Fetch = Callable[[str, Advert], Awaitable[PeerListing]]


def tls_fetch(
    session: aiohttp.ClientSession, context: ssl.SSLContext, timeout_s: float = 5.0
) -> Fetch:
    """A ``Fetch`` over mutual TLS (``context``: :attr:`quorum.secure.ClusterTLS.client`).

    Refused connections raise PeerRefused, the rest PeerError: a certificate that
    is not the cluster's, or names another node id or another key than the
    advert's, is a PeerError, and nothing was sent to that peer.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch(address: str, advert: Advert) -> PeerListing:
        host = f"[{address}]" if ":" in address else address
        port = advert.port
        try:
            async with session.get(
                f"https://{host}:{port}{LOCAL_PATH}",
                ssl=context,
                # The name binds the node id and the advert's key: TLS checks both.
                server_hostname=node_dns_name(advert.node_id, advert.identity),
                timeout=timeout,
            ) as resp:
                if resp.status != 200:
                    raise PeerError(f"the peer answered {resp.status}")
                return parse_listing(json.loads(await resp.read()))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerError(
                f"{address}:{port} is no member of this cluster ({exc.certificate_error})"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise PeerRefused(f"{address}:{port} refused the connection ({exc.os_error})") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PeerError(
                f"no usable answer from {address}:{port} ({type(exc).__name__})"
            ) from None

    return fetch


@dataclass(slots=True)
class _Peer:
    advert: Advert
    addresses: tuple[str, ...]
    listing: PeerListing | None = None


class PeerTracker:
    """Owns the presence state; ``run`` is awaited by a task the node owns."""

    def __init__(
        self,
        fetch: Fetch,
        on_event: Callable[[FleetEvent], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._emit = on_event
        self._clock = clock
        self._presence = pr.Presence()
        self._peers: dict[str, _Peer] = {}
        self._published: dict[str, tuple[Holder, ...]] = {}
        self._wake = asyncio.Event()
        self._fetching: dict[str, asyncio.Task[None]] = {}

    def handle(self, event: DiscoveryEvent) -> None:
        """Discovery's callback: never blocks, only records and wakes ``run``."""
        now = self._clock()
        match event:
            case PeerFound(advert, addresses) | PeerUpdated(advert, addresses):
                peer = self._peers.get(advert.node_id)
                if peer is None:
                    log.info("found peer %s at %s", advert.node_name, ",".join(addresses))
                    self._peers[advert.node_id] = _Peer(advert, addresses)
                else:
                    peer.advert, peer.addresses = advert, addresses
                self._presence = pr.apply(self._presence, pr.Seen(advert.node_id), now)
            case PeerRemoved(node_id, _):
                peer = self._peers.get(node_id)
                if peer is not None:
                    log.info("peer %s said goodbye", peer.advert.node_name)
                self._presence = pr.apply(self._presence, pr.Goodbye(node_id), now)
                self._sync(node_id, now)  # before forgetting it, so the log names it
                self._peers.pop(node_id, None)
        self._wake.set()

    def views(self) -> list[PeerView]:
        now = self._clock()
        out = []
        for node_id, peer in sorted(self._peers.items(), key=lambda kv: kv[1].advert.node_name):
            state = self._presence.get(node_id)
            last = state.last_answer if state else None
            out.append(
                PeerView(
                    node_id=node_id,
                    name=peer.advert.node_name,
                    addresses=peer.addresses,
                    port=peer.advert.port,
                    online=pr.is_online(self._presence, node_id, now),
                    last_answer_age_s=None if last is None else round(now - last, 1),
                    models=tuple(m.id for m in peer.listing.models) if peer.listing else (),
                )
            )
        return out

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()  # before looking: a wake-up from now on is not lost
                now = self._clock()
                for node_id in pr.due_heartbeats(self._presence, now):
                    if node_id in self._peers and node_id not in self._fetching:
                        self._presence = pr.apply(self._presence, pr.HeartbeatSent(node_id), now)
                        task = asyncio.create_task(self._probe(node_id), name=f"peer-{node_id[:8]}")
                        self._fetching[node_id] = task
                for node_id in list(self._published):
                    self._sync(node_id, now)
                wake_at = pr.next_change(self._presence, now)
                delay = None if wake_at is None else max(0.0, wake_at - now)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                # that lands as the event fires, and the node's stop would then hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            tasks = list(self._fetching.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe(self, node_id: str) -> None:
        try:
            peer = self._peers.get(node_id)
            if peer is None:
                return
            outcome: pr.PresenceEvent | None = None
            for address in peer.addresses:
                try:
                    listing = await self._fetch(address, peer.advert)
                except PeerRefused as exc:
                    outcome = pr.Refused(node_id)
                    log.debug("peer %s: %s", peer.advert.node_name, exc)
                    continue
                except PeerError as exc:
                    log.debug("peer %s: %s", peer.advert.node_name, exc)
                    continue
                if listing.node_id != node_id:
                    log.warning("peer at %s answered as another node; ignored", address)
                    continue
                if address != peer.addresses[0]:  # remember the address that works
                    peer.addresses = (address, *(a for a in peer.addresses if a != address))
                peer.listing = listing
                outcome = pr.Answered(node_id)
                break
            if outcome is not None:
                now = self._clock()
                self._presence = pr.apply(self._presence, outcome, now)
                self._sync(node_id, now)
        finally:
            self._fetching.pop(node_id, None)
            self._wake.set()

    def _sync(self, node_id: str, now: float) -> None:
        """Publish the peer's holders if it is online, its departure if it is not."""
        peer = self._peers.get(node_id)
        online = pr.is_online(self._presence, node_id, now)
        holders = self._holders(peer) if online and peer and peer.listing else None
        before = self._published.get(node_id)
        if holders is None:
            if before is not None:
                del self._published[node_id]
                log.info("peer %s is offline", peer.advert.node_name if peer else node_id)
                self._emit(PeerGone(node_id))
            return
        if holders != before:
            self._published[node_id] = holders
            self._emit(PeerHoldersChanged(node_id, holders))

    def _holders(self, peer: _Peer) -> tuple[Holder, ...]:
        listing = peer.listing
        assert listing is not None
        host = peer.addresses[0]
        host = f"[{host}]" if ":" in host else host
        return peer_holders(
            listing.node_id,
            listing.node_name,
            Route.LAN,
            f"https://{host}:{peer.advert.port}",
            listing.models,
        )
