"""The heartbeat's timer on uvloop, whose timers may fire up to a millisecond early: one
tick per ping, not hundreds of zero-delay ticks until the due time."""

from __future__ import annotations

import asyncio
import random

import uvloop

from quorum.link.keepalive import Heartbeat, Keepalive
from quorum.protocol import Connection, Role


class Counting(Heartbeat):
    __slots__ = ("ticks",)

    def _tick(self) -> None:
        self.ticks = getattr(self, "ticks", 0) + 1
        super()._tick()


def test_a_heartbeat_ticks_about_once_per_ping_on_uvloop() -> None:
    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        conn = Connection(Role.NODE)
        conn.send_hello("n")
        conn.data_to_send()
        pings = 0

        def flush() -> None:
            nonlocal pings
            pings += sum(1 for _ in conn.data_to_send())

        beat = Counting(
            conn,
            Keepalive(interval=0.0105, dead_after=60.0, jitter=0.0),
            clock=loop.time,
            rng=random.Random(1),
            flush=flush,
            on_dead=lambda: None,
        )
        beat.start()
        await asyncio.sleep(0.5)
        beat.stop()
        return beat.ticks, pings

    ticks, pings = uvloop.run(run())
    assert pings >= 20  # every 10.5 ms for half a second
    assert ticks <= pings + 2, (ticks, pings)
