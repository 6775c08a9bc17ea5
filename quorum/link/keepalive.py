"""Liveness of one connection: ping about every ``interval``, call a silent peer dead.

The arithmetic is the protocol's (``quorum.protocol.Liveness``); ``Heartbeat``
runs it on a timer of the event loop (no task: an idle relay holds thousands
of connections). Any frame from the peer proves it alive (the pump's reader
reports each one), not only PONG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from quorum.errors import LocalProtocolError
from quorum.protocol import Connection, Liveness

log = logging.getLogger("quorum.link")

TIMER_SLACK_S = 0.002
"""A timer may fire this much before its time (uvloop's run on whole milliseconds): a tick
that early counts as on time, rather than waiting out the rest with zero-delay timers (on
uvloop, some 300 ticks per ping: a relay with 3,000 idle tunnels spent 120 ms of CPU a
second, 98 without them)."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Ping every ``interval`` s (spread by ``±jitter`` of it); dead after ``dead_after`` s
    of silence. DESIGN.md: ~10 s and ~25 s."""

    interval: float = 10.0
    dead_after: float = 25.0
    jitter: float = 0.2


class EndReason(Enum):
    CLOSED = "closed"
    """The transport closed (the peer hung up, or the socket broke)."""
    SILENT = "silent"
    """Nothing arrived from the peer for ``dead_after`` seconds."""
    PROTOCOL_ERROR = "protocol_error"
    """The peer broke the protocol."""
    STOPPED = "stopped"
    """``close`` was called, or ``run`` was cancelled."""
    FAILED = "failed"
    """A bug in a task of the pump (logged)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """Why a connection ended, in words a person can act on."""

    reason: EndReason
    message: str


class Heartbeat:
    """Queues a PING when one is due; calls ``on_dead`` once the peer was silent too long."""

    __slots__ = ("_clock", "_conn", "_flush", "_handle", "_on_dead", "_ping_due", "_rng", "live")

    def __init__(
        self,
        conn: Connection,
        settings: Keepalive,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        flush: Callable[[], None],
        on_dead: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._rng = rng
        self._flush = flush
        self._on_dead = on_dead
        now = clock()
        self.live = Liveness(
            now, interval=settings.interval, dead_after=settings.dead_after, jitter=settings.jitter
        )
        self._ping_due = self.live.next_ping_due(now, rng.uniform(-1, 1))
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._schedule(self._clock())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def heard(self, now: float) -> None:
        """A frame arrived from the peer."""
        self.live.on_frame_received(now)

    def _schedule(self, now: float) -> None:
        delay = max(0.0, min(self._ping_due, self.live.dead_at()) - now)
        self._handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        now = self._clock()
        if self.live.is_dead(now + TIMER_SLACK_S):
            self._handle = None
            self._on_dead()
            return
        if now + TIMER_SLACK_S >= self._ping_due:
            with contextlib.suppress(LocalProtocolError):  # closed meanwhile: the pump ends
                self._conn.send_ping(os.urandom(8))
            self.live.on_ping_sent(now)
            self._flush()
            self._ping_due = self.live.next_ping_due(now, self._rng.uniform(-1, 1))
        self._schedule(now)
