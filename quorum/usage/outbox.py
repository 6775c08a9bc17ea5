"""The node's durable usage outbox: records survive a crash and reach the relay exactly once.

Contract:
- ``await outbox.append(record)`` returns once the record is committed to
  SQLite (WAL) in the node's data directory, so a process crash after it
  cannot lose the record. A request id already in the outbox is ignored.
- ``run()`` (a task the node owns) ships what is pending in batches of at
  most ``batch_size``, oldest first (a partial batch at most once per
  ``linger_s``), and deletes a batch only after the
  relay acknowledged it, which the relay does only after committing it. A
  crash between the relay's commit and our delete makes us ship the batch
  again; the relay keeps one record per request id, so it is counted once.
- A failed shipment (relay down, 5xx, timeout) is retried with full-jitter
  backoff (1 s doubling to ``max_backoff_s``); records wait meanwhile. A
  batch the relay rejects as malformed (400) can never succeed: it is moved
  to the ``rejected`` table (kept for inspection, logged) instead of blocking
  the queue. A refused cluster token (401/403) is retried at the slowest pace.
- Cancelling ``run()`` is safe at any point: unacknowledged records stay.
- Recording never fails a request. If the outbox cannot be written (disk
  full, read-only, corrupt file), ``append`` keeps the record in memory (at
  most ``MAX_HELD``; past that the oldest are dropped and counted), says so
  in ``problem`` (shown by ``quorum status`` and ``/metrics``), and the
  shipper retries writing them; while the file stays unwritable they are
  shipped from memory (not durable, but not lost to a full disk).

Durability is against process crashes (WAL, ``synchronous=NORMAL``); power
loss may take the last moments of appends with it. The file is this process's
alone (SQLite's exclusive locking). An append commits on the event loop: a
write to the log in the page cache, cheaper than a hand-over to a thread and
back. What may wait on the disk (copying the log back into the file, with its
fsync, every ``CHECKPOINT_EVERY`` commits and after each shipment; an append
while the shipper holds the file) runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from quorum.errors import RemoteProtocolError, ShipFailed, ShipRefused, ShipRejected
from quorum.keys import Credentials, as_credentials, http_base_of
from quorum.protocol import MAX_USAGE_BATCH, UsageBatch, backoff
from quorum.protocol import RequestUsage as UsageRecord

log = logging.getLogger("quorum.usage")

OUTBOX_FILE = "usage-outbox.sqlite3"
MAX_HELD = 100_000  # records kept in memory while the outbox cannot be written
CHECKPOINT_EVERY = 1000  # commits between two copies of the log back into the file


Ship = Callable[[Sequence[UsageRecord]], Awaitable[None]]
"""Delivers a batch; returns only once the relay committed it, else raises ``ShipFailed``."""


class HttpShipper:
    """``POST {relay}/api/v1/usage`` as a member (``Credentials``: the node's certificate
    and proof, or a token); 200 means committed."""

    def __init__(
        self,
        relay_http_base: str | Callable[[], str],
        cluster_token: str | Credentials,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        # A callable: the relay the node's tunnel is on now (it moves between relays).
        self._base = relay_http_base
        self._credentials = as_credentials(cluster_token)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __call__(self, records: Sequence[UsageRecord]) -> None:
        body = UsageBatch(tuple(records)).encode()
        headers = {**self._credentials(), "Content-Type": "application/json"}
        try:
            async with self._session.post(
                http_base_of(self._base) + "/api/v1/usage",
                data=body,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ShipFailed(f"the relay is unreachable: {type(exc).__name__}") from None
        if resp.status == 200:
            return
        if resp.status in (401, 403):
            raise ShipRefused(f"the relay refused this node's credentials ({resp.status})")
        if resp.status == 400:
            raise ShipRejected(f"the relay rejected the batch: {text[:300]}")
        raise ShipFailed(f"the relay answered {resp.status}")


class Outbox:
    def __init__(
        self,
        path: Path,
        ship: Ship,
        *,
        batch_size: int = 500,
        linger_s: float = 0.5,
        max_backoff_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_USAGE_BATCH:
            raise ValueError(f"batch_size must be within 1..{MAX_USAGE_BATCH}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._ship = ship
        self._batch = batch_size
        self._linger = linger_s
        self._max_backoff = max_backoff_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._commits = 0  # since the log was last copied back into the file
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # The file is this process's alone: no file lock taken and dropped per commit.
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A commit on the event loop never copies the log back (and fsyncs): a thread does.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        # (Files made before this kept AUTOINCREMENT: the same order, one more page a commit.)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, "
            "request_id TEXT NOT NULL UNIQUE, record TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected (request_id TEXT PRIMARY KEY, "
            "record TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self.shipped = 0
        self.failures = 0
        self._held: list[UsageRecord] = []  # appended while the file could not be written
        self.dropped = 0  # held records dropped past MAX_HELD
        self.problem: str | None = None  # why records are held in memory, if they are

    # -- producers --------------------------------------------------------------

    async def append(self, record: UsageRecord) -> None:
        """Commit ``record`` to the outbox (idempotent by request id), then wake the shipper.

        Never raises for the outbox's own sake: an unwritable file holds the
        record in memory instead (see the module's contract).
        """
        await self.extend([record])

    async def extend(self, records: Sequence[UsageRecord]) -> None:
        if self._held:
            self._hold(records)  # keep the order: the held ones go first
        else:
            try:
                if not self._insert_now(records):
                    await asyncio.to_thread(self._insert, records)
            except (sqlite3.Error, OSError) as exc:
                self._failed_write(exc)
                self._hold(records)
            else:
                self._written_again()
        self._empty.clear()
        self._wake.set()

    @property
    def held(self) -> int:
        """Records kept in memory because the outbox could not be written."""
        return len(self._held)

    def _hold(self, records: Sequence[UsageRecord]) -> None:
        self._held.extend(records)
        over = len(self._held) - MAX_HELD
        if over > 0:
            del self._held[:over]
            self.dropped += over

    def _failed_write(self, exc: BaseException) -> None:
        if self.problem is None:
            log.warning(
                "usage records cannot be written to %s (%s); keeping them in memory and retrying",
                self.path,
                exc,
            )
        self.problem = f"usage records cannot be written to {self.path}: {exc}"

    async def _flush_held(self) -> None:
        """Write the held records to the file, if it takes them again."""
        if not self._held:
            return
        batch = list(self._held)
        try:
            await asyncio.to_thread(self._insert, batch)
        except (sqlite3.Error, OSError) as exc:
            self._failed_write(exc)
            return
        del self._held[: len(batch)]
        if not self._held:
            self._written_again()

    def _written_again(self) -> None:
        if self.problem is not None:
            log.info("usage records are written to %s again", self.path)
            self.problem = None

    def _insert_now(self, records: Sequence[UsageRecord]) -> bool:
        """Commit ``records`` on the caller's thread if the file is free at once: a commit is
        a write to the log in the page cache (no fsync, no checkpoint), tens of
        microseconds, less than the hand-over to a thread and back. False, with nothing
        done, while the shipper's thread holds the file, or when the log is due to be
        copied back (``_insert`` does that, in a thread)."""
        if self._commits >= CHECKPOINT_EVERY or not self._lock.acquire(blocking=False):
            return False
        try:
            self._insert_locked(records)
        finally:
            self._lock.release()
        return True

    def _insert(self, records: Sequence[UsageRecord]) -> None:
        with self._lock:
            self._insert_locked(records)
            if self._commits >= CHECKPOINT_EVERY:
                self._checkpoint_locked()

    def _insert_locked(self, records: Sequence[UsageRecord]) -> None:
        rows = [(r.request_id, r.encode().decode(), time.time()) for r in records]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO outbox (request_id, record, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                rows,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._commits += 1

    def _checkpoint_locked(self) -> None:
        """Copy the log back into the file and empty it (with an fsync: never on the loop)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._commits = 0

    # -- inspection ----------------------------------------------------------------

    def pending(self) -> int:
        """Records not yet confirmed by the relay (in the file and held in memory)."""
        with self._lock:
            stored = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return stored + len(self._held)

    def rejected(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the shipper -------------------------------------------------------------------

    async def run(self) -> None:
        """Ship forever (until cancelled): wait for records, batch, ship, forget what was acked."""
        attempt = 0
        full = False  # the last shipment took a whole batch: more are waiting
        while True:
            if attempt:
                delay = backoff(attempt, self._rng, first=1.0, base=1.0, cap=self._max_backoff)
                await asyncio.sleep(delay)
            elif not full:
                if not await asyncio.to_thread(self.pending):
                    self._wake.clear()
                    if not await asyncio.to_thread(self.pending):  # an append may have raced us
                        self._empty.set()
                        await self._wake.wait()
                # Let a batch gather, also when records came during the last shipment: under
                # load, a shipment per linger, not one per handful of records.
                if self._linger > 0:
                    await asyncio.sleep(self._linger)
            try:
                sent = await self.ship_once()
            except ShipFailed as exc:
                attempt += 1
                self.failures += 1
                level = logging.WARNING if attempt in (1, 10) else logging.DEBUG
                log.log(level, "usage records not shipped (try %d): %s", attempt, exc)
                if isinstance(exc, ShipRefused):
                    attempt = max(attempt, 16)
                continue
            if attempt:
                log.info("usage records reach the relay again")
            attempt = 0
            full = sent == self._batch

    async def ship_once(self) -> int:
        """Ship one batch of what is pending; the number of records the relay confirmed."""
        await self._flush_held()
        try:
            batch = await asyncio.to_thread(self._take)
        except (sqlite3.Error, OSError) as exc:
            self._failed_write(exc)
            batch = []
        if not batch:
            return await self._ship_held()
        seqs = [seq for seq, _ in batch]
        records = [record for _, record in batch]
        try:
            await self._ship(records)
        except ShipRejected as exc:
            log.error("the relay rejected %d usage records: %s; set aside", len(records), exc)
            await asyncio.to_thread(self._set_aside, seqs, str(exc))
            return 0
        await asyncio.to_thread(self._delete, seqs)
        self.shipped += len(seqs)
        return len(seqs)

    async def _ship_held(self) -> int:
        """Ship records held in memory (the file takes none): oldest first, forgotten once
        the relay confirmed them."""
        records = self._held[: self._batch]
        if not records:
            return 0
        try:
            await self._ship(records)
        except ShipRejected as exc:
            log.error("the relay rejected %d usage records: %s; dropped", len(records), exc)
            del self._held[: len(records)]
            return 0
        del self._held[: len(records)]
        self.shipped += len(records)
        return len(records)

    async def wait_empty(self) -> None:
        """Until ``run()`` has shipped everything appended so far."""
        if await asyncio.to_thread(self.pending):
            await self._empty.wait()

    async def drain(self) -> None:
        """Ship everything now (raising ``ShipFailed`` on the first failure). For shutdown."""
        while await self.ship_once():
            pass

    def _take(self) -> list[tuple[int, UsageRecord]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, record FROM outbox ORDER BY seq LIMIT ?", (self._batch,)
            ).fetchall()
        out: list[tuple[int, UsageRecord]] = []
        bad: list[int] = []
        for seq, text in rows:
            try:
                out.append((seq, UsageRecord.decode(text.encode())))
            except RemoteProtocolError:
                bad.append(seq)  # written by another version: cannot be shipped
        if bad:
            self._set_aside(bad, "unreadable record")
        return out

    def _delete(self, seqs: Sequence[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
            self._checkpoint_locked()

    def _set_aside(self, seqs: Sequence[int], reason: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            for seq in seqs:
                self._db.execute(
                    "INSERT INTO rejected (request_id, record, reason, at) "
                    "SELECT request_id, record, ?, ? FROM outbox WHERE seq = ? "
                    "ON CONFLICT (request_id) DO NOTHING",
                    (reason, time.time(), seq),
                )
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")
