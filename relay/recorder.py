"""Writes heartbeats, key uses and the relay's own usage records to the store, off the loop.

Handlers never wait on SQLite for bookkeeping: they hand a value to the
``Recorder`` (non-blocking) and one owned task commits what accumulated, in
a worker thread, in one transaction per kind. Heartbeats of one node
coalesce (only the newest matters). A failed write is retried with the data
kept; ``close()`` writes what is left before the store closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from quorum.protocol import RequestUsage
from relay.store import NodeSeen, Store

log = logging.getLogger("relay.recorder")

RETRY_S = 1.0


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._presence: dict[tuple[str, str], NodeSeen] = {}
        self._usage: dict[str, list[RequestUsage]] = defaultdict(list)
        self._touched: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def presence(self, seen: NodeSeen) -> None:
        self._presence[(seen.cluster_id, seen.node_id)] = seen
        self._wake.set()

    def usage(self, cluster_id: str, record: RequestUsage) -> None:
        self._usage[cluster_id].append(record)
        self._wake.set()

    async def commit(self, cluster_id: str, record: RequestUsage) -> None:
        """Queue ``record`` and return once it is in the store (raises if the write failed;
        the record then stays queued). Concurrent callers share one transaction."""
        self.usage(cluster_id, record)
        await self.flush()

    def key_used(self, key_id: str, now: float) -> None:
        self._touched[key_id] = now
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._presence) + sum(map(len, self._usage.values())) + len(self._touched)

    async def run(self) -> None:
        """Commit whatever accumulates, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("could not write to the store; retrying in %.0f s", RETRY_S)
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            presence, self._presence = self._presence, {}
            usage, self._usage = self._usage, defaultdict(list)
            touched, self._touched = self._touched, {}
            try:
                await asyncio.to_thread(self._write, presence, usage, touched)
            except BaseException:
                # Keep everything for the next try; newer heartbeats win over these.
                self._presence = {**presence, **self._presence}
                for cluster_id, records in usage.items():
                    self._usage[cluster_id][:0] = records
                self._touched = {**touched, **self._touched}
                raise

    def _write(
        self,
        presence: dict[tuple[str, str], NodeSeen],
        usage: dict[str, list[RequestUsage]],
        touched: dict[str, float],
    ) -> None:
        if presence:
            self._store.record_presence(list(presence.values()))
        for cluster_id, records in usage.items():
            self._store.add_usage(cluster_id, records)
        for key_id, now in touched.items():
            self._store.touch_key(key_id, now=now)

    async def close(self) -> None:
        """Write what is left (bounded by the caller's timeout)."""
        if self.pending:
            await self.flush()
