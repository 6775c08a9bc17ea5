"""The NATS adapter: publish, subscribe, probe, close. Nothing else of the mesh knows NATS.

``Bus`` is what the mesh needs of a message bus; ``NatsBus`` gives it with
``nats-py``. NATS keeps the order of one connection's messages on one subject,
which is all the mesh's relay-to-relay connections need (``peers``). Its errors
are translated here: a failed publish is ``TransportClosed``, a server that
cannot be reached at start a ``MeshError``. A probe (``ask``) is a NATS request:
the server answers "no responders" at once when nobody subscribes to the
subject, i.e. when the relay answering there lost its connection (killed, its
socket closed). The URL's password never reaches a message or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from quorum.errors import QuorumError, TransportClosed

log = logging.getLogger("relay.mesh")

Handler = Callable[[str, bytes], None]
"""Called with (subject, payload) for each message, in order; it must not wait."""
CONNECT_TIMEOUT_S = 5.0


class MeshError(QuorumError):
    """The relays' message bus cannot be used (unreachable, refused)."""


class Bus(Protocol):
    async def publish(self, subject: str, data: bytes) -> None: ...

    async def subscribe(self, subject: str, handler: Handler) -> None: ...

    async def answer(self, subject: str) -> None:
        """Answer every request on ``subject`` at once (with nothing): who asks learns we live."""
        ...

    async def ask(self, subject: str, wait_s: float) -> bool | None:
        """Whether anyone answers a request on ``subject``: False when no one listens there
        (NATS says so at once), None without an answer within ``wait_s``."""
        ...

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the bus is back after a loss (messages may be lost)."""
        ...

    async def close(self) -> None: ...


def where(url: str) -> str:
    """``url`` without its credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class NatsBus:
    """A ``Bus`` on one NATS connection (reconnecting by itself when the server comes back)."""

    def __init__(self, client: Client, url: str, reconnected: list[Callable[[], None]]) -> None:
        self._nc = client
        self._where = where(url)
        self._reconnected = reconnected

    @classmethod
    async def connect(cls, url: str, *, name: str) -> NatsBus:
        client: Client | None = None
        reconnected: list[Callable[[], None]] = []

        async def on_error(exc: Exception) -> None:
            log.warning("NATS at %s: %s", where(url), type(exc).__name__)

        async def on_disconnect() -> None:
            if client is not None and (client.is_closed or client.is_draining):
                return  # our own close
            log.warning("NATS at %s: disconnected; reconnecting", where(url))

        async def on_reconnect() -> None:
            log.info("NATS at %s: reconnected", where(url))
            for callback in reconnected:
                callback()

        try:
            client = await nats.connect(
                url,
                name=name,
                connect_timeout=int(CONNECT_TIMEOUT_S),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise MeshError(
                f"cannot reach NATS at {where(url)} ({type(exc).__name__}): start it, or check "
                "--nats"
            ) from None
        return cls(client, url, reconnected)

    async def publish(self, subject: str, data: bytes) -> None:
        try:
            await self._nc.publish(subject, data)
        except (nats.errors.Error, OSError) as exc:
            raise TransportClosed(f"NATS at {self._where}: {type(exc).__name__}") from None

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnected.append(callback)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        async def deliver(msg: Msg) -> None:
            handler(msg.subject, msg.data)

        await self._nc.subscribe(subject, cb=deliver)

    async def answer(self, subject: str) -> None:
        async def reply(msg: Msg) -> None:
            try:
                await msg.respond(b"")
            except (nats.errors.Error, OSError) as exc:
                log.debug("NATS: a probe was not answered: %s", type(exc).__name__)

        await self._nc.subscribe(subject, cb=reply)

    async def ask(self, subject: str, wait_s: float) -> bool | None:
        try:
            await self._nc.request(subject, b"", timeout=wait_s)
        except nats.errors.NoRespondersError:
            return False
        except (nats.errors.Error, OSError, TimeoutError):
            return None  # (a timeout, or NATS itself is away: nothing learnt of the peer)
        return True

    async def close(self) -> None:
        try:
            await self._nc.drain()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.debug("NATS drain: %s", exc)
            await self._nc.close()
