"""Idle keep-alive connections to the engines on this machine, by address."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from quorum.errors import ConnectTimeout
from quorum.http.connection import IDLE_S, EngineConnection


class EnginePool:
    """Idle keep-alive connections by (host, port); most recently used first."""

    def __init__(self, owner_closed: Callable[[], bool] = lambda: False) -> None:
        self._idle: dict[tuple[str, int], list[EngineConnection]] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._owner_closed = owner_closed  # whoever owns the pool has shut down
        self.closed = False

    async def connection(
        self, host: str, port: int, connect_timeout_s: float
    ) -> tuple[EngineConnection, bool]:
        """A pooled connection (``True``: reused) or a new one."""
        key = (host, port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: EngineConnection(self, key), host, port
                )
        except TimeoutError:
            raise ConnectTimeout() from None
        return conn, False

    def put(self, conn: EngineConnection) -> None:
        if self.closed:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(IDLE_S, self._reap)

    def forget(self, conn: EngineConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        """Close every idle connection; later ones are closed when released."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()

    def _reap(self) -> None:
        self._reaper = None
        if self._owner_closed():
            self.close()
            return
        now = asyncio.get_running_loop().time()
        left = 0
        for idle in list(self._idle.values()):
            for conn in list(idle):
                if now - conn.idle_since >= IDLE_S:
                    conn.close()
                else:
                    left += 1
        if left:
            self._reaper = asyncio.get_running_loop().call_later(IDLE_S / 2, self._reap)
