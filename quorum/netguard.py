"""Connection guards for the node's and the relay's HTTP servers (slowloris, floods).

aiohttp's server has no deadline for a request's head, nor for a body that
stops arriving: a client that sends half a head keeps its connection (and a
file descriptor) forever, and a thousand of them take a process down at the
usual 1,024-file limit. This wraps the server's protocol factory:

- A request head must arrive whole within ``head_timeout_s`` of its first
  byte (a drip of one byte a second does not keep it alive).
- A request body with a ``Content-Length`` must keep arriving: no byte for
  ``body_idle_s`` closes the connection.
- Between requests, and while a request is being answered, nothing is timed
  here (aiohttp's keep-alive timeout closes idle connections; a long answer
  is legitimately silent).
- A client that is not trusted (not loopback) may hold at most
  ``per_address`` connections at once; more are closed as they come.

After a head that asks to switch protocols (``Upgrade:``, the relay's WebSocket tunnel),
bytes that cannot start a request line are the new protocol's: nothing more is timed here
(a tunnel was cut 10 s after it opened when its frames were taken for an unfinished head).

``quorum.request_heads.HeadTracker`` is the pure part (bytes in, where the heads and
bodies are); ``GuardedFactory`` here is the asyncio adapter. A chunked request body is not
tracked (the connection is then left to aiohttp's own limits).

TLS on the same port (the node's): with a ``tls`` context, the first byte of a
connection says what it is. ``0x16`` (a TLS handshake record, the ClientHello)
runs TLS through an ``SSLProtocol`` fed the bytes already read (uvloop's compiled one
on uvloop's loop, the stdlib's pure-Python one elsewhere),
and the guards above then watch the decrypted stream; the server asks for a
client certificate, and aiohttp's handlers find the verified one in the
transport's ``ssl_object``. Anything else is plain HTTP, answered only for a
trusted (loopback) client unless ``plain_lan``; the others get a 403 saying
to use TLS. A connection must send its first byte within ``head_timeout_s``,
and finish its TLS handshake within as long again.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ipaddress
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from quorum.request_heads import HeadTracker, Phase

log = logging.getLogger("quorum.netguard")

TLS_HANDSHAKE_RECORD = 0x16

_PLAIN_REFUSED = json.dumps(
    {
        "error": {
            "message": "This node answers other machines over TLS only (https://, the node's "
            "certificate: its fingerprint is on the node page and in 'quorum status').",
            "type": "permission_error",
            "param": None,
            "code": "tls_required",
        }
    }
).encode()
PLAIN_REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_PLAIN_REFUSED)).encode() + b"\r\n\r\n" + _PLAIN_REFUSED
)


def is_trusted(host: str | None) -> bool:
    """Loopback clients are this machine's own: never capped."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class GuardedFactory:
    """A protocol factory around another (aiohttp's ``web.Server``) with the guards above."""

    def __init__(
        self,
        inner: Callable[[], asyncio.Protocol],
        *,
        head_timeout_s: float = 10.0,
        body_idle_s: float = 30.0,
        per_address: int = 64,
        trusted: Callable[[str | None], bool] = is_trusted,
        tls: ssl.SSLContext | None = None,
        plain_lan: bool = True,
    ) -> None:
        self.inner = inner
        self.tls = tls
        self.plain_lan = plain_lan
        self.sniff = tls is not None or not plain_lan
        self.head_timeout_s = head_timeout_s
        self.body_idle_s = body_idle_s
        self.per_address = per_address
        self.trusted = trusted
        self.open: dict[str, int] = {}
        self.refused = 0  # connections closed at once: over the per-address cap
        self.plain_refused = 0  # plain HTTP from another machine while only TLS is answered
        self.timed_out = 0  # connections closed for a slow head or a stalled body

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)


class _Guarded(asyncio.Protocol):
    def __init__(self, factory: GuardedFactory) -> None:
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None
        self._tracker = HeadTracker()
        self._timer: asyncio.TimerHandle | None = None
        self._tls: asyncio.sslproto.SSLProtocol | None = None
        self._sniffing = False
        self._trusted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        factory = self._factory
        self._trusted = factory.trusted(host)
        if not self._trusted:
            key = host or "?"
            if factory.open.get(key, 0) >= factory.per_address:
                factory.refused += 1
                if factory.refused in (1, 100, 10_000):
                    log.warning(
                        "refusing connections from %s: over %d at once", key, factory.per_address
                    )
                self._transport.abort()
                return
            factory.open[key] = factory.open.get(key, 0) + 1
            self._address = key
        if factory.sniff:
            self._sniffing = True  # the first byte says TLS or plain HTTP
            self._arm(factory.head_timeout_s)
            return
        self._inner = factory.inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            _feed(self._tls, data)
            return
        if self._sniffing:
            self._sniffing = False
            if not self._sniffed(data):
                return
        self._plain_received(data)

    def _sniffed(self, data: bytes) -> bool:
        """Start TLS or plain HTTP from the first bytes; False when they went elsewhere."""
        factory, transport = self._factory, self._transport
        assert transport is not None
        if data[0] == TLS_HANDSHAKE_RECORD and factory.tls is not None:
            # The handshake has as long again as the first byte had; then the head deadline.
            self._arm(factory.head_timeout_s)
            loop = asyncio.get_running_loop()
            self._tls = _ssl_protocol(loop)(
                loop,
                _Decrypted(self),
                factory.tls,
                cast(Any, None),  # no waiter: the handshake's end is _Decrypted.connection_made
                server_side=True,
                ssl_handshake_timeout=cast(Any, factory.head_timeout_s),
            )
            self._tls.connection_made(cast(asyncio.Transport, _RawTransport(transport)))
            _feed(self._tls, data)
            return False
        if not (self._trusted or factory.plain_lan):
            factory.plain_refused += 1
            if factory.plain_refused in (1, 100, 10_000):
                log.warning(
                    "refused plain HTTP from %s: this node answers the LAN over TLS", self._address
                )
            self._disarm()
            transport.write(PLAIN_REFUSAL)
            transport.close()
            return False
        self._disarm()
        self._inner = factory.inner()
        self._inner.connection_made(transport)
        return True

    def _tls_up(self, transport: asyncio.BaseTransport) -> None:
        """The handshake is done: aiohttp's protocol gets the decrypted transport."""
        self._disarm()
        self._inner = self._factory.inner()
        self._inner.connection_made(transport)

    def _plain_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        tracker = self._tracker
        before = tracker.phase
        started = tracker.feed(data)
        phase = tracker.phase
        if phase is Phase.HEAD:
            if started or before is not Phase.HEAD:
                self._arm(self._factory.head_timeout_s)  # from the head's first byte: no drip
        elif phase is Phase.BODY:
            self._arm(self._factory.body_idle_s)  # from the last byte that came
        else:
            self._disarm()  # between requests, or answering one: not timed here
        inner.data_received(data)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._factory.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def eof_received(self) -> bool | None:
        if self._tls is not None:
            self._tls.eof_received()
            return None
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._address is not None:
            left = self._factory.open.get(self._address, 1) - 1
            if left > 0:
                self._factory.open[self._address] = left
            else:
                self._factory.open.pop(self._address, None)
            self._address = None
        if self._tls is not None:
            self._tls.connection_lost(exc)  # it tells aiohttp's protocol, if that was made
        elif self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._tls is not None:
            self._tls.pause_writing()
        elif self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._tls is not None:
            self._tls.resume_writing()
        elif self._inner is not None:
            self._inner.resume_writing()


def _ssl_protocol(loop: asyncio.AbstractEventLoop) -> type[asyncio.sslproto.SSLProtocol]:
    """uvloop's TLS protocol on uvloop's loop (compiled: a LAN hop in TLS costs half the
    CPU of the stdlib's pure-Python one), the stdlib's on any other loop."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        import uvloop.loop

        found = getattr(uvloop.loop, "SSLProtocol", None)
        if isinstance(found, type):
            return cast(type[asyncio.sslproto.SSLProtocol], found)
    return asyncio.sslproto.SSLProtocol


class _Decrypted(asyncio.Protocol):
    """What ``SSLProtocol`` talks to: the decrypted side, handed on to the guards."""

    __slots__ = ("_outer",)

    def __init__(self, outer: _Guarded) -> None:
        self._outer = outer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._outer._tls_up(transport)

    def data_received(self, data: bytes) -> None:
        self._outer._plain_received(data)

    def eof_received(self) -> bool | None:
        inner = self._outer._inner
        return inner.eof_received() if inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        inner = self._outer._inner
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._outer._inner is not None:
            self._outer._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._outer._inner is not None:
            self._outer._inner.resume_writing()


class _RawTransport:
    """The socket's transport as ``SSLProtocol`` uses it: uvloop's has no ``_force_close``."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def _force_close(self, exc: BaseException | None) -> None:
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand ``data`` to a buffered protocol (``SSLProtocol`` is one) through its buffers."""
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view)))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


class GuardedSite(web.TCPSite):
    """An aiohttp ``TCPSite`` whose connections go through a ``GuardedFactory``."""

    __slots__ = ("guard",)

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, **options: Any) -> None:
        ssl_context = options.pop("ssl_context", None)
        super().__init__(runner, host, port, ssl_context=ssl_context)
        server = runner.server
        if server is None:
            raise RuntimeError("set the runner up before making its site")
        self.guard = GuardedFactory(server, **options)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
