"""Where a proxied request goes: an engine or LAN peer over HTTP, or a node through the relay.

All three give the proxy the same small interface (``Upstream``): status,
headers, body chunks as they come, and ``release``. An engine on this machine
(``http://`` on a loopback address, a body up to 1 MiB) is asked through the
lean keep-alive client of :mod:`quorum.http`; anything else through aiohttp.
Transport errors are mapped here, once, into the error tree: nothing past this
module sees aiohttp's or the lean client's.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

import aiohttp

from quorum.errors import EngineTimeout, EngineUnreachable, NoReachableHolder, UpstreamFailed
from quorum.fleet import Holder, Route
from quorum.http import (
    LEAN_BODY_LIMIT,
    ConnectionLost,
    ConnectTimeout,
    EngineConnection,
    EnginePool,
    HttpProtocolError,
    request_body,
)
from quorum.proxy.upstream import Headers, Upstream
from quorum.secure import node_dns_name
from quorum.server.liveness import health_probe, watched
from quorum.tunnel import TunnelClient

if TYPE_CHECKING:
    from quorum.server.context import NodeContext

CONNECT_TIMEOUT_S = 5.0  # as the node's aiohttp session: ClientTimeout(sock_connect=5)


class HttpUpstream:
    def __init__(self, response: aiohttp.ClientResponse, holder: Holder) -> None:
        self._response = response
        self._holder = holder
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content_length = response.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _broken(self._holder, exc) from None

    async def read(self, limit: int) -> bytes:
        # The whole body: ``content.read(n)`` would return whatever arrived first.
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await self._response.content.readany():
                size += len(chunk)
                if size > limit:
                    raise UpstreamFailed(
                        f"The answer of {_who(self._holder)} is over {limit} bytes."
                    )
                parts.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _broken(self._holder, exc) from None
        return b"".join(parts)

    def release(self) -> None:
        # Closing (not releasing to the pool) an unfinished response is what makes
        # the engine see the cancel.
        if not self._response.content.is_eof():
            self._response.close()
        else:
            self._response.release()


class LeanUpstream:
    """An answer on a connection of :class:`quorum.http.EnginePool`."""

    def __init__(self, conn: EngineConnection, holder: Holder) -> None:
        self._conn = conn
        self._holder = holder
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self.content_length = conn.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while chunk := await conn.next_chunk(hold=True):
                yield chunk
        except (ConnectionLost, HttpProtocolError) as exc:
            raise _broken(self._holder, exc) from None

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        conn = self._conn
        try:
            while chunk := await conn.next_chunk():
                size += len(chunk)
                if size > limit:
                    raise UpstreamFailed(
                        f"The answer of {_who(self._holder)} is over {limit} bytes."
                    )
                parts.append(chunk)
        except (ConnectionLost, HttpProtocolError) as exc:
            raise _broken(self._holder, exc) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        self._conn.release()


def _who(holder: Holder) -> str:
    if holder.route is Route.LOCAL:
        return f"the engine '{holder.service}' on {holder.node_name}"
    return f"the node {holder.node_name}"


def _broken(holder: Holder, exc: BaseException) -> UpstreamFailed:
    return UpstreamFailed(
        f"{_who(holder).capitalize()} stopped in the middle of the answer; the answer is "
        f"incomplete ({type(exc).__name__})."
    )


class LeanTarget(NamedTuple):
    host: str
    port: int
    host_header: str
    path_prefix: str


@functools.lru_cache(maxsize=256)
def lean_target(url: str) -> LeanTarget | None:
    """Where the lean client connects for an engine at ``url``; ``None``: use aiohttp."""
    try:
        split = urlsplit(url)
        port = split.port or 80
        host = split.hostname
    except ValueError:
        return None
    if split.scheme != "http" or not host or split.username or split.password:
        return None
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    return LeanTarget(host, port, split.netloc, split.path.rstrip("/"))


_pools: weakref.WeakKeyDictionary[aiohttp.ClientSession, EnginePool] = weakref.WeakKeyDictionary()


def _pool(session: aiohttp.ClientSession) -> EnginePool:
    pool = _pools.get(session)
    if pool is None:
        owner = weakref.ref(session)

        def owner_closed() -> bool:
            alive = owner()
            return alive is None or alive.closed

        pool = _pools[session] = EnginePool(owner_closed)
    return pool


def close_pool(session: aiohttp.ClientSession) -> None:
    """Close the lean client's idle connections of ``session`` (the node is stopping)."""
    pool = _pools.pop(session, None)
    if pool is not None:
        pool.close()


def _request_head(
    method: str, target: LeanTarget, path_qs: str, headers: Headers, length: int
) -> bytes:
    lines = [f"{method} {target.path_prefix}{path_qs} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in headers)
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


async def _open_lean(
    pool: EnginePool,
    target: LeanTarget,
    holder: Holder,
    method: str,
    path_qs: str,
    headers: Headers,
    payload: bytes,
) -> Upstream:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + holder.header_timeout_s
    head = _request_head(method, target, path_qs, headers, len(payload))
    while True:
        conn, reused = await _connect(pool, target, holder)
        try:
            conn.send(head, payload)
            await conn.head(deadline - loop.time())
        except TimeoutError:
            conn.close()
            raise _timed_out(holder) from None
        except ConnectionLost:
            conn.close()
            if reused and not conn.heard:
                # The engine closed this idle connection as the request went out (its
                # keep-alive ran out first): it never saw the request. Once more, on a
                # new connection, as browsers do.
                continue
            raise _invalid(holder, ConnectionLost("the connection closed")) from None
        except HttpProtocolError as exc:
            conn.close()
            raise _invalid(holder, exc) from None
        except BaseException:
            conn.close()  # cancelled: the engine must see the request go away
            raise
        return LeanUpstream(conn, holder)


def _invalid(holder: Holder, exc: Exception) -> UpstreamFailed:
    return UpstreamFailed(
        f"{_who(holder).capitalize()} did not answer with valid HTTP ({type(exc).__name__}: {exc})."
    )


async def _connect(
    pool: EnginePool, target: LeanTarget, holder: Holder
) -> tuple[EngineConnection, bool]:
    try:
        return await pool.connection(
            target.host, target.port, min(CONNECT_TIMEOUT_S, holder.header_timeout_s)
        )
    except ConnectTimeout:
        if holder.header_timeout_s <= CONNECT_TIMEOUT_S:
            raise _timed_out(holder) from None
        raise EngineUnreachable(
            f"{_who(holder).capitalize()} did not accept a connection in time."
        ) from None
    except OSError as exc:
        raise EngineUnreachable(
            f"{_who(holder).capitalize()} is not reachable ({exc.strerror or exc})."
        ) from None


def _timed_out(holder: Holder) -> EngineTimeout:
    return EngineTimeout(
        f"{_who(holder).capitalize()} did not answer within {holder.header_timeout_s:g} s."
    )


async def open_http(
    session: aiohttp.ClientSession,
    holder: Holder,
    method: str,
    path_qs: str,
    headers: Headers,
    payload: bytes,
    *,
    tls: ssl.SSLContext | None = None,
) -> Upstream:
    """Send the request to an engine or a LAN peer; return once response headers are in.

    With ``tls`` (a LAN peer: :attr:`quorum.secure.ClusterTLS.client`), the peer must
    present the cluster's certificate for the holder's node id; ours goes with it.
    """
    if len(payload) <= LEAN_BODY_LIMIT and not session.closed:
        target = lean_target(holder.url)
        if target is not None:
            return await _open_lean(
                _pool(session), target, holder, method, path_qs, headers, payload
            )
    try:
        async with asyncio.timeout(holder.header_timeout_s):
            response = await session.request(
                method,
                holder.url + path_qs,
                data=request_body(payload),
                headers=headers,
                allow_redirects=False,
                ssl=tls if tls is not None else True,
                server_hostname=node_dns_name(holder.node_id) if tls is not None else None,
            )
    except aiohttp.ClientConnectorCertificateError as exc:
        raise EngineUnreachable(
            f"{_who(holder).capitalize()} did not prove it is a member of this cluster "
            f"({exc.certificate_error})."
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise EngineUnreachable(
            f"{_who(holder).capitalize()} is not reachable "
            f"({exc.os_error.strerror or exc.os_error})."
        ) from None
    except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: catch it first
        raise EngineUnreachable(
            f"{_who(holder).capitalize()} did not accept a connection in time."
        ) from None
    except TimeoutError:
        raise _timed_out(holder) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailed(
            f"{_who(holder).capitalize()} did not answer with valid HTTP "
            f"({type(exc).__name__}: {exc})."
        ) from None
    return HttpUpstream(response, holder)


async def open_relay(
    tunnel: TunnelClient | None,
    holder: Holder,
    method: str,
    path_qs: str,
    headers: Headers,
    payload: bytes,
) -> Upstream:
    """Send the request to a node on another network through the relay."""
    if tunnel is None:
        raise NoReachableHolder(f"{_who(holder).capitalize()} is only reachable through a relay.")
    return await tunnel.request(
        holder.node_id,
        method,
        path_qs,
        headers,
        payload,
        holder.header_timeout_s,
    )


class NodeOpener:
    """The node's :class:`quorum.proxy.Opener`: HTTP to engines and LAN peers (the
    node's session), the tunnel to nodes behind the relay (read at each call)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    async def __call__(
        self, holder: Holder, method: str, path_qs: str, headers: Headers, body: bytes
    ) -> Upstream:
        if holder.route is Route.RELAY:
            return await open_relay(self._ctx.tunnel, holder, method, path_qs, headers, body)
        if holder.route is Route.LAN:
            tls = self._ctx.tls
            if tls is None:
                raise NoReachableHolder(f"{_who(holder).capitalize()} is a LAN peer: no cluster.")
            session = self._ctx.session
            every = self._ctx.config.node.peer_liveness_s
            health = replace(holder, header_timeout_s=every)
            probe = health_probe(
                lambda: open_http(session, health, "GET", "/healthz", (), b"", tls=tls.client),
                every,
            )
            opening = open_http(session, holder, method, path_qs, headers, body, tls=tls.client)
            return await watched(opening, holder, probe, every)
        return await open_http(self._ctx.session, holder, method, path_qs, headers, body)
