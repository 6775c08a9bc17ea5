"""Dialling the relay: the ``websockets`` client connection, as a ``quorum.link`` transport.

A node with its certificate joins without the token (``dial_relay``); the
token, when it must travel, is in the upgrade's ``Authorization`` header (never
in the URL, never logged). Everything ``websockets`` raises is translated
here, once: a 401 or 403 at the upgrade into ``AuthRefused`` (retrying
cannot help), any other failure to connect, and any later close, into
``TransportClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import CloseCode

from quorum import __version__
from quorum.errors import AuthRefused, TransportClosed
from quorum.protocol import MAX_FRAME_SIZE
from quorum.secure import ClusterTLS
from quorum.secure.hop import RELAY_CERT_HEADER, relay_cert_of
from quorum.secure.join import join_headers

OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
ABORT_WAIT_S = 0.25
"""How long the close frame to a relay that broke the protocol may take before the socket closes."""


class WebSocketTransport:
    """A ``websockets`` client connection that sends and receives binary frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        response = ws.response
        header = response.headers.get(RELAY_CERT_HEADER) if response is not None else None
        self.relay_cert = relay_cert_of(header)
        """The relay's certificate for the public /v1's hop (``quorum.secure.hop``), if any."""

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise TransportClosed(_closed(exc)) from None

    async def receive(self) -> bytes:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise TransportClosed(_closed(exc)) from None
        if isinstance(message, str):
            raise TransportClosed("the relay sent a text message")
        return message

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            # Cut short (the caller's time ran out, or it was cancelled) before the relay
            # answered the close: the socket goes anyway, never left open behind us.
            self._ws.transport.abort()

    def stop_reading(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed already
            self._ws.transport.pause_reading()

    async def abort(self) -> None:
        # The relay broke the protocol: read nothing more of it; the close frame still goes.
        socket = self._ws.transport
        self.stop_reading()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ABORT_WAIT_S):
                await self._ws.close(code=CloseCode.PROTOCOL_ERROR)
        socket.close()


async def dial_relay(url: str, token: str, tls: ClusterTLS | None = None) -> WebSocketTransport:
    """Open the tunnel's WebSocket to ``url``; ``AuthRefused`` on 401/403,
    ``TransportClosed`` for any other failure.

    With ``tls``, the node joins with its certificate and a fresh proof of its key
    (:mod:`quorum.secure.join`) and no token: the relay knows the cluster's CA. Only
    if it answers 401 (a relay that has not seen this cluster's CA yet: a cluster
    made before it kept them) does the node join once more with the token too,
    which lets the relay keep the CA for the next time.
    """
    if tls is None:
        return await _dial(url, {"Authorization": f"Bearer {token}"})
    try:
        return await _dial(url, join_headers(tls, time.time()))
    except _Refused as exc:
        if exc.status != 401:
            raise
    return await _dial(url, {"Authorization": f"Bearer {token}", **join_headers(tls, time.time())})


class _Refused(AuthRefused):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def _dial(url: str, headers: dict[str, str]) -> WebSocketTransport:
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            user_agent_header=f"quorum/{__version__}",
            max_size=MAX_FRAME_SIZE,
            ping_interval=None,  # liveness is the protocol's own PING
            compression=None,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
        )
    except InvalidStatus as exc:
        code = exc.response.status_code
        if code in (401, 403):
            raise _Refused(
                f"the relay refused this cluster token or this node's key ({code})", code
            ) from None
        raise TransportClosed(f"InvalidStatus: {exc}") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise TransportClosed(f"{type(exc).__name__}: {exc}") from None
    return WebSocketTransport(ws)


def _closed(exc: ConnectionClosed) -> str:
    return "the relay closed the connection" if exc.rcvd is not None else "the connection broke"
