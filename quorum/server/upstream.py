"""Where a proxied request goes: an engine or LAN peer over HTTP, or a node through the relay.

Both give the proxy the same small interface (``Upstream``): status, headers,
body chunks as they come, and ``release``. Transport errors are mapped here,
once, into the error tree: nothing past this module sees aiohttp's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
from multidict import CIMultiDict

from quorum.errors import EngineTimeout, EngineUnreachable, NoReachableHolder, UpstreamFailed
from quorum.fleet import Holder, Route
from quorum.http import request_body
from quorum.tunnel import TunnelClient


class Upstream(Protocol):
    status: int
    content_length: int | None

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises ``UpstreamFailed`` if it breaks off."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body; ``UpstreamFailed`` if it breaks off or passes ``limit``."""
        ...

    def release(self) -> None: ...


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
        try:
            data = await self._response.content.read(limit + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _broken(self._holder, exc) from None
        if len(data) > limit:
            raise UpstreamFailed(f"The answer of {_who(self._holder)} is over {limit} bytes.")
        return data

    def release(self) -> None:
        # Closing (not releasing to the pool) an unfinished response is what makes
        # the engine see the cancel.
        if not self._response.content.is_eof():
            self._response.close()
        else:
            self._response.release()


def _who(holder: Holder) -> str:
    if holder.route is Route.LOCAL:
        return f"the engine '{holder.service}' on {holder.node_name}"
    return f"the node {holder.node_name}"


def _broken(holder: Holder, exc: BaseException) -> UpstreamFailed:
    return UpstreamFailed(
        f"{_who(holder).capitalize()} stopped in the middle of the answer; the answer is "
        f"incomplete ({type(exc).__name__})."
    )


async def open_http(
    session: aiohttp.ClientSession,
    holder: Holder,
    method: str,
    path_qs: str,
    headers: CIMultiDict[str],
    payload: bytes,
) -> Upstream:
    """Send the request to an engine or a LAN peer; return once response headers are in."""
    try:
        async with asyncio.timeout(holder.header_timeout_s):
            response = await session.request(
                method,
                holder.url + path_qs,
                data=request_body(payload),
                headers=headers,
                allow_redirects=False,
            )
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
        raise EngineTimeout(
            f"{_who(holder).capitalize()} did not answer within {holder.header_timeout_s:g} s."
        ) from None
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
    headers: CIMultiDict[str],
    payload: bytes,
) -> Upstream:
    """Send the request to a node on another network through the relay."""
    if tunnel is None:
        raise NoReachableHolder(f"{_who(holder).capitalize()} is only reachable through a relay.")
    return await tunnel.request(
        holder.node_id,
        method,
        path_qs,
        list(headers.items()),
        payload,
        holder.header_timeout_s,
    )
