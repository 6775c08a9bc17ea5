"""mDNS/DNS-SD adapter: advertise this node and report peers of its cluster.

:class:`Discovery` owns one ``AsyncZeroconf`` bound to the chosen IPv4
interfaces (see :mod:`quorum.discovery.interfaces`), registers one
``_quorum._tcp.local.`` service for this node and browses the same type.
What it learns it hands, as frozen events, to the ``on_event`` callback it
was given, on the event loop, one call per change:

- :class:`PeerFound` the first time a peer of our cluster resolves;
- :class:`PeerUpdated` when its advert (e.g. models digest) or addresses change;
- :class:`PeerRemoved` when it says goodbye, or turns out to be unusable.

Never reported: our own service (same node id), adverts of another cluster
(cluster discriminator differs) and malformed adverts; each such instance is logged
once at warning, then at debug. Resolution reads zeroconf's cache first and
asks the network only for what is missing, for at most ``resolve_timeout_s``.

Errors from zeroconf and from sockets are translated here into
:class:`~quorum.discovery.errors.DiscoveryError`; nothing above this module
sees a zeroconf exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from quorum.discovery.errors import BadAdvert, DiscoveryError
from quorum.discovery.events import DiscoveryEvent, PeerFound, PeerRemoved, PeerUpdated
from quorum.discovery.interfaces import local_nics, select_addresses
from quorum.discovery.txt import (
    SERVICE_TYPE,
    Advert,
    decode_txt,
    encode_txt,
    host_label,
    instance_name,
)

logger = logging.getLogger("quorum.discovery")

RESOLVE_TIMEOUT_S = 3.0
_MAX_QUIET_KEYS = 512


@dataclass(frozen=True, slots=True)
class _Peer:
    advert: Advert
    addresses: tuple[str, ...]


class Discovery:
    """Advertise ``advert`` and browse for peers on the LAN.

    Lifecycle: ``await start()`` (or ``async with``), then any of
    :meth:`update`, :meth:`pause`, :meth:`resume`, and finally
    ``await close()``, which sends goodbyes and cancels every task this object
    spawned. ``interfaces`` is a list of interface names or IPv4 addresses;
    None picks the default set. ``on_event`` must not block; an exception it
    raises is logged and does not stop discovery.
    """

    def __init__(
        self,
        advert: Advert,
        on_event: Callable[[DiscoveryEvent], None],
        *,
        interfaces: Sequence[str] | None = None,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self._advert = advert
        self._on_event = on_event
        self._wanted = None if interfaces is None else tuple(interfaces)
        self._resolve_timeout_ms = resolve_timeout_s * 1000
        self._addresses: tuple[str, ...] = ()
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None  # our registered service, None when not
        self._announce: asyncio.Task[None] | None = None
        self._paused = False
        self._closed = False
        self._lock = asyncio.Lock()  # serializes register/update/unregister
        self._peers: dict[str, _Peer] = {}  # by lower-case service name
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._quiet = _QuietLog()

    # -- public API ---------------------------------------------------------

    @property
    def advert(self) -> Advert:
        """The advert this node publishes (the latest given to :meth:`update`)."""
        return self._advert

    @property
    def addresses(self) -> tuple[str, ...]:
        """The IPv4 addresses discovery uses; empty before :meth:`start`."""
        return self._addresses

    @property
    def advertising(self) -> bool:
        """True while our service is registered (started, not paused, not closed)."""
        return self._info is not None

    @property
    def service_name(self) -> str | None:
        """Our full service name while advertising (zeroconf may rename on a clash)."""
        return None if self._info is None else self._info.name

    async def start(self) -> None:
        """Open mDNS on the chosen interfaces, start browsing, then advertise unless paused.

        Returns once our name is probed and registered; announcements go on
        in the background. Raises :class:`DiscoveryError` (``NoInterface``
        when no interface fits); on error nothing is left running.
        """
        if self._aiozc is not None or self._closed:
            raise DiscoveryError("discovery was already started (or closed)")
        try:
            self._addresses = select_addresses(local_nics(), self._wanted)
            try:
                self._aiozc = AsyncZeroconf(
                    interfaces=list(self._addresses), ip_version=IPVersion.V4Only
                )
            except (OSError, ZeroconfError) as exc:
                where = ", ".join(self._addresses)
                raise DiscoveryError(f"cannot open mDNS on {where}: {exc}") from exc
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_state_change]
            )
            async with self._lock:
                if not self._paused:
                    await self._register()
        except BaseException:
            await self.close()
            raise
        logger.info("discovery on %s", ", ".join(self._addresses))

    async def update(self, advert: Advert) -> None:
        """Publish ``advert`` instead of the current one.

        A change of TXT only (e.g. the models digest) updates the registered
        service in place; a change of name, node id or port re-registers it.
        While paused or before start the advert is kept for later. Peers are
        filtered by the cluster discriminator current when they resolve: to change
        cluster, close this Discovery and start a new one.
        """
        async with self._lock:
            old, self._advert = self._advert, advert
            if self._info is None or advert == old:
                return
            if (advert.node_id, advert.port, instance_name(advert)) == (
                old.node_id,
                old.port,
                instance_name(old),
            ):
                info = self._service_info(advert, name=self._info.name)
                await self._cancel_announce()
                announce = await self._zeroconf_call(self._zc().async_update_service(info))
                self._info = info
                self._announce = self._spawn("quorum.discovery.announce", _wait(announce))
            else:
                await self._unregister()
                await self._register()

    async def pause(self) -> None:
        """Stop advertising (goodbye sent) but keep browsing. Idempotent."""
        async with self._lock:
            self._paused = True
            await self._unregister()

    async def resume(self) -> None:
        """Advertise again after :meth:`pause`, with the latest advert. Idempotent."""
        async with self._lock:
            if not self._paused:
                return
            self._paused = False
            if self._aiozc is not None and not self._closed:
                await self._register()

    async def close(self) -> None:
        """Send goodbyes, stop browsing, cancel every task, close sockets. Idempotent.

        Emits no events: peers are not reported removed because we left.
        """
        if self._closed:
            return
        self._closed = True
        await _cancel_all([t for t in self._tasks if t is not self._announce])
        async with self._lock:
            try:
                await self._unregister()
            except DiscoveryError as exc:
                logger.warning("could not say goodbye: %s", exc)
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._aiozc is not None:
            await self._aiozc.async_close()
            self._aiozc = None
        await _cancel_all(list(self._tasks))
        self._peers.clear()
        logger.info("discovery closed")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- advertising (called with self._lock held) --------------------------

    async def _register(self) -> None:
        info = self._service_info(self._advert)
        aiozc = self._zc()
        announce = await self._zeroconf_call(
            aiozc.async_register_service(info, allow_name_change=True)
        )
        self._info = info
        self._announce = self._spawn("quorum.discovery.announce", _wait(announce))
        logger.info("advertising %s port %s", info.name, self._advert.port)

    async def _unregister(self) -> None:
        info, self._info = self._info, None
        if info is None or self._aiozc is None:
            return
        await self._cancel_announce()
        goodbye = await self._zeroconf_call(self._aiozc.async_unregister_service(info))
        await goodbye
        logger.info("stopped advertising %s", info.name)

    async def _cancel_announce(self) -> None:
        task, self._announce = self._announce, None
        if task is not None:
            await _cancel_all([task])

    def _service_info(self, advert: Advert, name: str | None = None) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            name or f"{instance_name(advert)}.{SERVICE_TYPE}",
            port=advert.port,
            properties=encode_txt(advert),
            server=f"{host_label(advert.node_id)}.local.",
            parsed_addresses=list(self._addresses),
        )

    def _zc(self) -> AsyncZeroconf:
        if self._aiozc is None:
            raise DiscoveryError("discovery is not running")
        return self._aiozc

    @staticmethod
    async def _zeroconf_call(call: Awaitable[Awaitable[Any]]) -> Awaitable[Any]:
        try:
            return await call
        except (OSError, ZeroconfError) as exc:
            raise DiscoveryError(f"mDNS failed: {exc!r}") from exc

    # -- browsing -----------------------------------------------------------

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Browser callback, on the event loop; its parameter names are zeroconf's."""
        if self._closed:
            return
        key = name.lower()
        self._cancel_resolve(key)
        if state_change is ServiceStateChange.Removed:
            self._forget(key, name)
            return
        if self._is_own(key):
            return
        try:
            info = AsyncServiceInfo(service_type, name)
        except ZeroconfError as exc:  # the name came from the network
            self._quiet.warning(key, "ignoring %s: %r", name, exc)
            return
        if info.load_from_cache(zeroconf):
            self._accept(key, info)
        else:
            task = self._spawn(f"quorum.discovery.resolve:{name}", self._resolve(key, info))
            self._resolving[key] = task

    async def _resolve(self, key: str, info: AsyncServiceInfo) -> None:
        try:
            found = await info.async_request(self._zc().zeroconf, self._resolve_timeout_ms)
        except (OSError, ZeroconfError, DiscoveryError) as exc:
            logger.debug("resolving %s failed: %r", info.name, exc)
            return
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]
        if found:
            self._accept(key, info)
        else:
            logger.debug("no complete answer for %s", info.name)

    def _accept(self, key: str, info: AsyncServiceInfo) -> None:
        name = info.name
        try:
            advert = decode_txt(info.properties)
        except BadAdvert as exc:
            self._quiet.warning(key, "ignoring %s: %s", name, exc)
            self._forget(key, name)
            return
        if advert.node_id == self._advert.node_id:
            if not self._is_own(key):
                self._quiet.warning(
                    key, "ignoring %s: it uses our node id %s", name, advert.node_id
                )
            return
        if advert.cluster != self._advert.cluster:
            self._quiet.warning(key, "ignoring %s: it belongs to another cluster", name)
            self._forget(key, name)
            return
        if info.port and info.port != advert.port:
            advert = replace(advert, port=info.port)  # the SRV record has the last word
        addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
        if not addresses:
            logger.debug("ignoring %s for now: no IPv4 address", name)
            return
        peer, old = _Peer(advert, addresses), self._peers.get(key)
        if peer == old:
            return
        self._peers[key] = peer
        if old is None:
            self._emit(PeerFound(advert, addresses))
        elif old.advert.node_id != advert.node_id:
            self._emit(PeerRemoved(old.advert.node_id, name))
            self._emit(PeerFound(advert, addresses))
        else:
            self._emit(PeerUpdated(advert, addresses))

    def _is_own(self, key: str) -> bool:
        """True for our registered name, and our usual name even while paused."""
        if self._info is not None and key == self._info.key:
            return True
        return key == f"{instance_name(self._advert)}.{SERVICE_TYPE}".lower()

    def _forget(self, key: str, name: str) -> None:
        peer = self._peers.pop(key, None)
        if peer is not None:
            self._emit(PeerRemoved(peer.advert.node_id, name))

    def _cancel_resolve(self, key: str) -> None:
        task = self._resolving.pop(key, None)
        if task is not None:
            task.cancel()

    def _emit(self, event: DiscoveryEvent) -> None:
        logger.debug("discovery event %s", event)
        try:
            self._on_event(event)
        except Exception:
            logger.exception("discovery event handler failed on %s", event)

    # -- task ownership -----------------------------------------------------

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)


class _QuietLog:
    """Log a problem with one instance at warning the first time, then at debug.

    Keys come from the network, so the memory of seen keys is bounded.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], None] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        seen_key = (key, msg)
        if seen_key in self._seen:
            logger.debug(msg, *args)
            return
        if len(self._seen) >= _MAX_QUIET_KEYS:
            del self._seen[next(iter(self._seen))]
        self._seen[seen_key] = None
        logger.warning(msg, *args)


async def _wait(awaitable: Awaitable[Any]) -> None:
    await awaitable


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
