"""The node's tunnel to the relay: connect, keep alive, reconnect, carry streams.

- Connects to ``relay.url`` with the cluster token in the upgrade's
  ``Authorization`` header (never in the URL, never logged).
- Reconnects forever with the protocol's jittered backoff; a 401 or 403
  stops it (the token is wrong: retrying cannot help) and says so.
- Pings about every 10 s; a relay silent for 25 s is dead: the socket is
  closed, every stream on it fails at once (visibly), and it reconnects.
- Sends its model list (presence) on connect, on every change and every 30 s;
  the relay's presence of other nodes becomes ``route=relay`` holders.
- A stream the relay opens is served by an HTTP request to this node's own
  server with the hop header: the same path a LAN peer's request takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from quorum import __version__
from quorum.config.models import EngineKind, ServiceType
from quorum.errors import (
    LocalProtocolError,
    NoReachableHolder,
    RemoteProtocolError,
    UpstreamFailed,
)
from quorum.fleet import FleetEvent, Holder, PeerGone, PeerHoldersChanged, Route
from quorum.http import request_body
from quorum.protocol import (
    MAX_FRAME_SIZE,
    Connection,
    DataReceived,
    Event,
    GoAwayReceived,
    Limits,
    Liveness,
    ModelInfo,
    Presence,
    PresenceReceived,
    Reconnect,
    RequestHead,
    ResetCode,
    ResponseHead,
    ResponseReceived,
    Role,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
)
from quorum.protocol.headers import HOP_HEADER
from quorum.tunnel.streams import (
    END,
    SEND_SLICE,
    InStream,
    OutStream,
    StreamBroken,
    StreamRefused,
    TunnelResponse,
)

log = logging.getLogger("quorum.tunnel")

PRESENCE_INTERVAL_S = 30.0
REFUSED_RETRIES = 4
# What this node lets the relay open towards it.
NODE_LIMITS = Limits(max_streams=256, max_opens_per_second=1000.0)
_SKIP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_NOT_REACHED = {ResetCode.NO_ROUTE, ResetCode.REFUSED, ResetCode.PEER_GONE}


class AuthRefused(Exception):
    """The relay refused the token (401/403): reconnecting cannot help."""


@dataclass
class TunnelStatus:
    url: str
    connected: bool = False
    since: float | None = None
    last_error: str | None = None
    stopped: bool = False
    peers: int = 0


class TunnelClient:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        node_id: str,
        node_name: str,
        local_url: str,
        session: aiohttp.ClientSession,
        on_fleet: Callable[[FleetEvent], None],
        local_models: Callable[[], Sequence[ModelInfo]],
        max_body: int,
        limits: Limits | None = None,
        ping_interval: float = 10.0,
    ) -> None:
        self._url = url
        self._token = token
        self._node_id = node_id
        self._name = node_name
        self._local_url = local_url
        self._session = session
        self._on_fleet = on_fleet
        self._local_models = local_models
        self._max_body = max_body
        self._limits = limits or NODE_LIMITS
        self._ping_interval = ping_interval
        self._rng = random.Random()
        self.status = TunnelStatus(url)
        self._conn: Connection | None = None
        self._dirty = asyncio.Event()
        self._slot = asyncio.Event()  # set when a stream may have closed
        self._out: dict[int, OutStream] = {}
        self._in: dict[int, InStream] = {}
        self._peers: dict[str, Presence] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._opened_at: float | None = None

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
                try:
                    await self._connect_once()
                except AuthRefused as exc:
                    self.status.stopped = True
                    self.status.last_error = str(exc)
                    log.error("relay %s: %s; not reconnecting", self._url, exc)
                    return
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    self.status.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("relay %s unreachable: %s", self._url, self.status.last_error)
                if self._opened_at is not None:
                    state = state.connected(self._opened_at)
                    self._opened_at = None
                state = state.disconnected(loop.time())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def models_changed(self) -> None:
        """This node's model list changed: tell the relay now."""
        if self._conn is not None:
            with contextlib.suppress(LocalProtocolError):
                self._conn.send_presence(self._presence())
            self._flush()

    async def request(
        self,
        node_id: str,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        header_timeout_s: float,
    ) -> TunnelResponse:
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
    ) -> TunnelResponse:
        conn = self._conn
        if conn is None:
            raise NoReachableHolder("The relay is not connected; the node cannot be reached.")
        await self._stream_slot(conn, header_timeout_s)
        head = RequestHead(method, path, tuple(headers), node=node_id)
        sid = conn.open_stream(head, end_stream=not body)
        stream = OutStream(conn, sid, self._flush)
        self._out[sid] = stream
        self._flush()
        try:
            if body:
                await stream.write(body)
                conn.end_stream(sid)
                self._flush()
            async with asyncio.timeout(header_timeout_s):
                status, resp_headers = await stream.response
        except TimeoutError:
            self._cancel(stream, "no response in time")
            raise NoReachableHolder(
                f"The node did not answer through the relay within {header_timeout_s:g} s."
            ) from None
        except asyncio.CancelledError:
            self._cancel(stream, "the client went away")
            raise
        except LocalProtocolError:
            # The stream died while we sent the body: say why, if the reset said.
            failed = stream.response.done() and stream.response.exception()
            if isinstance(failed, Exception):
                raise failed from None
            raise NoReachableHolder("The relay connection was lost.") from None
        return TunnelResponse(stream, status, resp_headers)

    async def _stream_slot(self, conn: Connection, timeout_s: float) -> None:
        """Wait (bounded) until the relay lets this connection open one more stream."""
        try:
            async with asyncio.timeout(timeout_s):
                while not conn.can_open_stream():
                    if self._conn is not conn:
                        raise NoReachableHolder("The relay connection was lost.")
                    self._slot.clear()
                    await self._slot.wait()
        except TimeoutError:
            raise NoReachableHolder(
                "Too many requests are running through the relay; none finished in time."
            ) from None

    # -- one connection -----------------------------------------------------

    async def _connect_once(self) -> None:
        try:
            ws = await connect(
                self._url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=f"quorum/{__version__}",
                max_size=MAX_FRAME_SIZE,
                ping_interval=None,  # liveness is the protocol's own PING
                compression=None,
                open_timeout=10,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise AuthRefused(f"the relay refused this cluster token ({code})") from None
            raise
        conn = Connection(Role.NODE, self._limits)
        conn.send_hello(self._node_id, capabilities=("presence", "streams"))
        conn.send_presence(self._presence())
        self._conn = conn
        self._dirty.set()
        self._opened_at = asyncio.get_running_loop().time()
        self.status.connected, self.status.since, self.status.last_error = True, time.time(), None
        log.info("connected to relay %s", self._url)
        writer = asyncio.create_task(self._writer(ws, conn), name="tunnel-writer")
        try:
            await self._reader(ws, conn)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await ws.close()
            self._lost(conn)

    async def _writer(self, ws: ClientConnection, conn: Connection) -> None:
        next_presence = asyncio.get_running_loop().time() + PRESENCE_INTERVAL_S
        while True:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_presence - loop.time())):
                    await self._dirty.wait()
            self._dirty.clear()
            if loop.time() >= next_presence:
                conn.send_presence(self._presence())
                next_presence = loop.time() + PRESENCE_INTERVAL_S
            for frame in conn.data_to_send():
                await ws.send(frame)

    async def _reader(self, ws: ClientConnection, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        live = Liveness(
            loop.time(), interval=self._ping_interval, dead_after=self._ping_interval * 2.5
        )
        while True:
            now = loop.time()
            due = min(live.next_ping_due(now, self._rng.uniform(-1, 1)), live.dead_at())
            try:
                async with asyncio.timeout(max(0.0, due - now)):
                    message = await ws.recv()
            except TimeoutError:
                now = loop.time()
                if live.is_dead(now):
                    self.status.last_error = "the relay stopped answering"
                    log.warning("relay silent too long: reconnecting")
                    return
                conn.send_ping(os.urandom(8))
                live.on_ping_sent(now)
                self._flush()
                continue
            except websockets.ConnectionClosed:
                self.status.last_error = "the relay closed the connection"
                return
            if isinstance(message, str):
                raise websockets.InvalidMessage("the relay sent a text message")
            live.on_frame_received(loop.time())
            try:
                events = conn.receive_frame(message, loop.time())
            except RemoteProtocolError as exc:
                log.warning("the relay broke the protocol: %s", exc)
                for frame in conn.data_to_send():
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await ws.send(frame)
                return
            self._handle(conn, events + conn.take_events())
            self._flush()

    def _flush(self) -> None:
        self._dirty.set()
        self._slot.set()  # whatever changed may have freed a stream slot

    # -- events -------------------------------------------------------------

    def _handle(self, conn: Connection, events: list[Event]) -> None:
        for event in events:
            match event:
                case PresenceReceived(presence):
                    self._presence_of_peer(presence)
                case ResponseReceived(sid, head, end_stream):
                    out = self._out.get(sid)
                    if out is not None and not out.response.done():
                        out.response.set_result((head.status, list(head.headers)))
                        if end_stream:
                            out.chunks.put_nowait(END)
                            self._out.pop(sid, None)
                case DataReceived(sid, data):
                    if (out := self._out.get(sid)) is not None:
                        out.chunks.put_nowait(data)
                    elif (inc := self._in.get(sid)) is not None:
                        self._gather(conn, inc, data)
                    else:
                        with contextlib.suppress(LocalProtocolError):
                            conn.consumed(sid, len(data))
                case StreamEnded(sid):
                    if (out := self._out.pop(sid, None)) is not None:
                        out.chunks.put_nowait(END)
                    elif (inc := self._in.get(sid)) is not None and inc.task is None:
                        inc.task = self._spawn(self._serve(conn, inc), f"tunnel-serve-{sid}")
                case StreamWritable(sid):
                    if (out := self._out.get(sid)) is not None:
                        out.writable.set()
                    elif (inc := self._in.get(sid)) is not None:
                        inc.writable.set()
                case StreamReset(sid, code, message, _):
                    self._reset(sid, code, message)
                case StreamOpened(sid, head, end_stream):
                    inc = InStream(sid, head.method, head.path, list(head.headers))
                    self._in[sid] = inc
                    if end_stream:
                        inc.task = self._spawn(self._serve(conn, inc), f"tunnel-serve-{sid}")
                case GoAwayReceived(goaway):
                    log.info(
                        "relay says goodbye (%s): reconnecting",
                        goaway.message or goaway.reason.name,
                    )

    def _reset(self, sid: int, code: ResetCode, message: str) -> None:
        if (out := self._out.pop(sid, None)) is not None:
            if not out.response.done():
                error: Exception = (
                    NoReachableHolder(
                        f"The node could not be reached through the relay: {message}."
                    )
                    if code in _NOT_REACHED
                    else UpstreamFailed(f"The request failed in the relay tunnel: {message}.")
                )
                out.response.set_exception(error)
            else:
                out.chunks.put_nowait(
                    StreamBroken(f"The answer through the relay was cut off: {message}.")
                )
            out.writable.set()
        elif (inc := self._in.pop(sid, None)) is not None:
            inc.reset = True
            inc.writable.set()
            if inc.task is not None:
                inc.task.cancel()  # the far client went away: stop the local engine too

    def _gather(self, conn: Connection, inc: InStream, data: bytes) -> None:
        inc.body += data
        conn.consumed(inc.sid, len(data))
        if len(inc.body) > self._max_body:
            self._in.pop(inc.sid, None)
            conn.reset_stream(inc.sid, ResetCode.TOO_LARGE, "the request body is too large")

    def _cancel(self, stream: OutStream, why: str) -> None:
        self._out.pop(stream.sid, None)
        stream.done = True
        with contextlib.suppress(LocalProtocolError):
            stream.conn.reset_stream(stream.sid, ResetCode.CANCEL, why)
        self._flush()

    def _lost(self, conn: Connection) -> None:
        """The socket is gone: fail every stream at once, forget the relay's peers."""
        self._conn = None
        self.status.connected = False
        self._handle(conn, conn.connection_lost())
        for stream in list(self._out.values()):
            self._reset(stream.sid, ResetCode.PEER_GONE, "the relay connection was lost")
        for sid in list(self._in):
            self._reset(sid, ResetCode.PEER_GONE, "the relay connection was lost")
        for node_id in list(self._peers):
            self._on_fleet(PeerGone(node_id, Route.RELAY))
        self._peers.clear()
        self.status.peers = 0

    # -- presence -----------------------------------------------------------

    def _presence(self) -> Presence:
        return Presence(self._node_id, tuple(self._local_models()), True, 0, self._name)

    def _presence_of_peer(self, presence: Presence) -> None:
        node_id = presence.node_id
        if node_id == self._node_id:
            return
        if not presence.online:
            if self._peers.pop(node_id, None) is not None:
                self._on_fleet(PeerGone(node_id, Route.RELAY))
        else:
            self._peers[node_id] = presence
            holders = tuple(_holder(presence, m) for m in presence.models if _known_type(m.type))
            self._on_fleet(PeerHoldersChanged(node_id, holders, Route.RELAY))
        self.status.peers = len(self._peers)

    # -- serving a stream the relay opened ------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, conn: Connection, inc: InStream) -> None:
        """Answer ``inc`` through this node's own HTTP server, as a LAN peer would ask it."""
        headers = [(k, v) for k, v in inc.headers if k.lower() not in _SKIP_HEADERS]
        headers = [
            (k, v) for k, v in headers if k.lower() not in ("authorization", HOP_HEADER.lower())
        ]
        headers += [(HOP_HEADER, "1"), ("Authorization", f"Bearer {self._token}")]
        try:
            async with self._session.request(
                inc.method,
                self._local_url + inc.path,
                data=request_body(bytes(inc.body)),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                out_headers = tuple(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in _SKIP_HEADERS
                )
                length = resp.headers.get("Content-Length")
                if length is not None:
                    out_headers += (("Content-Length", length),)
                conn.send_response_head(inc.sid, ResponseHead(resp.status, out_headers))
                self._flush()
                async for chunk in resp.content.iter_any():
                    await self._send(conn, inc, chunk)
            if not inc.reset:
                conn.end_stream(inc.sid)
                self._flush()
        except (aiohttp.ClientError, LocalProtocolError) as exc:
            if not inc.reset:
                with contextlib.suppress(LocalProtocolError):
                    conn.reset_stream(
                        inc.sid, ResetCode.INTERNAL, f"serving failed: {type(exc).__name__}"
                    )
                self._flush()
        finally:
            self._in.pop(inc.sid, None)

    async def _send(self, conn: Connection, inc: InStream, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if inc.reset:
                raise LocalProtocolError("stream reset")
            offered = bytes(view[:SEND_SLICE])
            n = conn.send_data(inc.sid, offered)
            self._flush()
            view = view[n:]
            if n < len(offered):  # out of credit: StreamWritable will say when to go on
                inc.writable.clear()
                await inc.writable.wait()


def _known_type(value: str) -> bool:
    return value in ServiceType._value2member_map_


def _holder(presence: Presence, model: ModelInfo) -> Holder:
    return Holder(
        model=model.id,
        type=ServiceType(model.type),
        node_id=presence.node_id,
        node_name=presence.name or presence.node_id[:8],
        route=Route.RELAY,
        service=model.service,
        engine=EngineKind.OPENAI,
        url=f"relay://{presence.node_id}",
        upstream_model=model.id,
        features=frozenset(model.features),
    )
