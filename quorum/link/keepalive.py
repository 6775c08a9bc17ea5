"""Liveness of one connection: ping about every ``interval``, call a silent peer dead.

The arithmetic is the protocol's (``quorum.protocol.Liveness``); this is the
task that sleeps on it. Any frame from the peer proves it alive (the reader
reports each one to the same ``Liveness``), not only PONG.
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


async def keep_alive(
    conn: Connection,
    live: Liveness,
    settings: Keepalive,
    *,
    clock: Callable[[], float],
    rng: random.Random,
    flush: Callable[[], None],
    peer: str,
) -> Ended:
    """Ping on schedule until the peer has been silent for ``dead_after``; then say so."""
    ping_due = live.next_ping_due(clock(), rng.uniform(-1, 1))
    while True:
        now = clock()
        if live.is_dead(now):
            log.info("%s silent for %.0f s: closing", peer, settings.dead_after)
            return Ended(
                EndReason.SILENT, f"{peer} stopped answering for {settings.dead_after:g} s"
            )
        if now >= ping_due:
            with contextlib.suppress(LocalProtocolError):  # closed meanwhile: the pump ends
                conn.send_ping(os.urandom(8))
            live.on_ping_sent(now)
            flush()
            ping_due = live.next_ping_due(now, rng.uniform(-1, 1))
        await asyncio.sleep(max(0.0, min(ping_due, live.dead_at()) - now))
