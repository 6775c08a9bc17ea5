"""Requests this node sends to another node through the relay (``TunnelClient.request``).

- A request opens a stream to ``node_id`` on the current connection (its ``Pump``),
  waiting for a free stream slot first, and returns the answer's head with its body
  still to read (``streams.TunnelResponse``).
- With the cluster's TLS (``e2e.Channels``) the request goes end to end: the relay sees
  ``POST /quorum/v1/e2e`` once per channel, and the requests go inside TLS between the
  two nodes, on a kept channel when one is idle.
- A stream refused before it was processed (a rate or stream limit on the way) is
  opened again after a short pause, a few times. No answer in time is
  ``NoReachableHolder`` (a 503); the caller going away resets the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence

from quorum.errors import NoReachableHolder, StreamRefused, TransportClosed
from quorum.link import Pump, TunnelStream
from quorum.protocol import RequestHead, ResetCode
from quorum.tunnel import e2e
from quorum.tunnel.streams import TunnelResponse

REFUSED_RETRIES = 4
_PEER = "the node through the relay"


class RelayRequests:
    """Sends requests to other nodes on whatever connection ``current_pump`` returns now
    (``None``: not connected), end to end through ``channels`` when given."""

    def __init__(
        self, current_pump: Callable[[], Pump | None], channels: e2e.Channels | None
    ) -> None:
        self._current_pump = current_pump
        self._channels = channels

    async def request(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
    ) -> TunnelResponse | e2e.SecureResponse:
        """Send a request to ``node_id`` through the relay and wait for its response head.

        A stream refused before it was processed (a rate or stream limit on the
        way) is opened again after a short pause, a few times.
        """
        for attempt in range(REFUSED_RETRIES + 1):
            try:
                return await self._request_once(
                    node_id, method, path, headers, body, header_timeout_s
                )
            except StreamRefused:
                if attempt == REFUSED_RETRIES:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _request_once(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
    ) -> TunnelResponse | e2e.SecureResponse:
        pump = self._current_pump()
        if pump is None:
            raise NoReachableHolder("The relay is not connected; the node cannot be reached.")
        try:
            async with asyncio.timeout(header_timeout_s):
                await pump.wait_for_slot()
        except TimeoutError:
            raise NoReachableHolder(
                "Too many requests are running through the relay; none finished in time."
            ) from None
        except TransportClosed:
            raise NoReachableHolder("The relay connection was lost.") from None
        channels = self._channels
        if channels is not None:
            return await self._request_e2e(
                pump, channels, node_id, method, path, headers, body, header_timeout_s
            )
        head = RequestHead(method, path, tuple(headers), node=node_id)
        stream = pump.open_stream(head, end_stream=not body, peer=_PEER)
        with _reset_on_failure(stream, header_timeout_s):
            if body:
                await stream.send_all(body)
                await stream.send_eof()
            async with asyncio.timeout(header_timeout_s):
                answer = await stream.response()
        return TunnelResponse(stream, answer)

    async def _request_e2e(
        self,
        pump: Pump,
        channels: e2e.Channels,
        node_id: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
    ) -> TunnelResponse | e2e.SecureResponse:
        """End to end: the relay sees ``POST /quorum/v1/e2e`` to ``node_id`` once per channel;
        the requests go inside TLS between the two nodes, on a kept channel when one is idle."""
        channel = channels.take(node_id)
        if channel is not None:
            try:
                return await self._on_channel(
                    channel, channels, method, path, headers, body, header_timeout_s, True
                )
            except e2e.ChannelClosed:
                pass  # the node closed it as we sent: it served nothing; a new one
        head = RequestHead("POST", e2e.E2E_PATH, (), node=node_id)
        stream = pump.open_stream(head, end_stream=False, peer=_PEER)
        with _reset_on_failure(stream, header_timeout_s):
            async with asyncio.timeout(header_timeout_s):
                outer = await stream.response()
            if outer.status != 200:
                return TunnelResponse(stream, outer)  # the relay's own answer (no route)
            channel = await channels.connect(stream, node_id, header_timeout_s)
            response = await self._on_channel(
                channel, channels, method, path, headers, body, header_timeout_s, False
            )
            channels.keep_session(channel)  # the ticket came before the answer
            return response

    @staticmethod
    async def _on_channel(
        channel: e2e.Channel,
        channels: e2e.Channels,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
        reused: bool,
    ) -> e2e.SecureResponse:
        try:
            return await channel.request(
                method, path, headers, body, header_timeout_s, channels.put, reused=reused
            )
        except e2e.ChannelClosed:
            channel.close()
            raise
        except TimeoutError:
            channel.stream.reset(ResetCode.CANCEL, "no response in time")
            raise NoReachableHolder(
                f"The node did not answer through the relay within {header_timeout_s:g} s."
            ) from None
        except asyncio.CancelledError:
            channel.stream.reset(ResetCode.CANCEL, "the client went away")
            raise


@contextlib.contextmanager
def _reset_on_failure(stream: TunnelStream, header_timeout_s: float) -> Iterator[None]:
    """Around opening a stream to a node: no answer in time is a 503 and the client going
    away cancels it; either way the stream is reset."""
    try:
        yield
    except TimeoutError:
        stream.reset(ResetCode.CANCEL, "no response in time")
        raise NoReachableHolder(
            f"The node did not answer through the relay within {header_timeout_s:g} s."
        ) from None
    except asyncio.CancelledError:
        stream.reset(ResetCode.CANCEL, "the client went away")
        raise
