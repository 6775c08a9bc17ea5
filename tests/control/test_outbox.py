"""The node's usage outbox: durable, retried, and exactly once in the relay's store."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from quorum.errors import ShipFailed, ShipRejected
from quorum.usage import UsageRecord
from quorum.usage.outbox import HttpShipper, Outbox
from relay.sqlite_store import SqliteStore
from relay.store import UsageBy
from tests.control.harness import FakeClock, InProcessRelay
from tests.control.outbox_worker import make
from tests.harness import timeout, wait_for
from tests.relay.harness import Relay, create_cluster


class Crash(Exception):
    """Stands for the node process dying at this exact point."""


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[InProcessRelay, str, str]]:
    made = await InProcessRelay(tmp_path / "relay", FakeClock()).start()
    cluster, token = made.store.create_cluster("home", now=1.0)
    yield made, cluster.id, token
    await made.close()


async def test_records_reach_the_relay_and_leave_the_outbox(
    relay: tuple[InProcessRelay, str, str], tmp_path: Path
) -> None:
    server, cluster_id, token = relay
    async with aiohttp.ClientSession() as session:
        outbox = Outbox(tmp_path / "outbox.sqlite3", HttpShipper(server.http, token, session))
        for i in range(30):
            await outbox.append(make(i))
        await outbox.append(make(3))  # the same request twice is one record
        assert outbox.pending() == 30
        task = asyncio.create_task(outbox.run())

        async def empty() -> bool:
            return outbox.pending() == 0

        await wait_for(empty, 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()
    assert len(server.store.usage_records(cluster_id, limit=1000)) == 30


async def test_a_crash_after_the_relay_committed_ships_again_and_counts_once(
    relay: tuple[InProcessRelay, str, str], tmp_path: Path
) -> None:
    server, cluster_id, token = relay
    path = tmp_path / "outbox.sqlite3"
    async with aiohttp.ClientSession() as session:
        real = HttpShipper(server.http, token, session)

        async def ship_then_die(records: Sequence[UsageRecord]) -> None:
            await real(records)  # committed and acknowledged by the relay...
            raise Crash  # ...but the node dies before forgetting the batch

        first = Outbox(path, ship_then_die, batch_size=10)
        await first.extend([make(i) for i in range(25)])
        with pytest.raises(Crash):
            await first.ship_once()
        first.close()
        assert len(server.store.usage_records(cluster_id, limit=1000)) == 10

        restarted = Outbox(path, real, batch_size=10)  # the node comes back
        assert restarted.pending() == 25
        await restarted.drain()
        assert restarted.pending() == 0
        restarted.close()
    records = server.store.usage_records(cluster_id, limit=1000)
    assert sorted(r.request_id for r in records) == sorted(f"req-{i}" for i in range(25))
    (total,) = server.store.usage(cluster_id, UsageBy.MODEL)
    assert total.prompt_tokens == sum(i % 7 for i in range(25))


async def test_failures_back_off_and_keep_the_records(tmp_path: Path) -> None:
    delivered: list[str] = []
    failures = 3

    async def flaky(records: Sequence[UsageRecord]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ShipFailed("relay down")
        delivered.extend(r.request_id for r in records)

    outbox = Outbox(
        tmp_path / "o.sqlite3",
        flaky,
        linger_s=0,
        max_backoff_s=0.05,
        rng=random.Random(7),
    )
    await outbox.extend([make(i) for i in range(5)])
    task = asyncio.create_task(outbox.run())

    async def done() -> bool:
        return outbox.pending() == 0

    await wait_for(done, 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert outbox.failures == 3 and outbox.shipped == 5
    assert sorted(delivered) == sorted(f"req-{i}" for i in range(5))
    outbox.close()


async def test_a_malformed_batch_is_set_aside_not_retried_forever(tmp_path: Path) -> None:
    async def refuse(records: Sequence[UsageRecord]) -> None:
        raise ShipRejected("400")

    outbox = Outbox(tmp_path / "o.sqlite3", refuse, batch_size=2)
    await outbox.extend([make(i) for i in range(3)])
    assert await outbox.ship_once() == 0
    assert (outbox.pending(), outbox.rejected()) == (1, 2)
    outbox.close()


async def test_cancelling_mid_shipment_loses_nothing(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def stuck(records: Sequence[UsageRecord]) -> None:
        gate.set()
        await asyncio.Event().wait()

    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path, stuck, linger_s=0)
    await outbox.extend([make(i) for i in range(4)])
    task = asyncio.create_task(outbox.run())
    await gate.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    outbox.close()
    assert Outbox(path, stuck).pending() == 4


# -- processes: kill the shipper mid-batch, and the relay too ----------------------------


def start_worker(path: Path, relay: Relay, count: int, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.control.outbox_worker", str(path), relay.http, str(count)],
        env={**os.environ, "QUORUM_TEST_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stored(data: Path) -> int:
    store = SqliteStore(data)
    try:
        return sum(g.requests for g in store.usage(_cluster(store), UsageBy.MODEL))
    finally:
        store.close()


def _cluster(store: SqliteStore) -> str:
    cluster = store.cluster("home")
    assert cluster is not None
    return cluster.id


def wait_until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {timeout(seconds):.0f} s")


def test_killed_shipper_and_restarted_relay_still_store_each_record_once(tmp_path: Path) -> None:
    count = 3000
    data = tmp_path / "relay"
    data.mkdir()
    token = create_cluster(data, "home")
    relay = Relay(data).start()
    outbox = tmp_path / "node" / "usage-outbox.sqlite3"
    try:
        worker = start_worker(outbox, relay, count, token)
        # SIGKILL the shipper once the relay holds part of the records: mid-run, and
        # with a fair chance mid-batch (between the relay's commit and our delete).
        wait_until(lambda: stored(data) > 0, 60, "the first batch")
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=timeout(10))
        partial = stored(data)
        assert 0 < partial < count
        # The relay dies too, and comes back while the restarted shipper retries.
        relay.kill()
        worker = start_worker(outbox, relay, count, token)
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "appended"
        relay.start()
        out, _ = worker.communicate(timeout=timeout(120))
        assert worker.returncode == 0, out
        assert "drained" in out
    finally:
        relay.kill()
    store = SqliteStore(data)
    try:
        cluster_id = _cluster(store)
        records = store.usage_records(cluster_id, limit=count + 10)
        assert sorted(r.request_id for r in records) == sorted(f"req-{i}" for i in range(count))
        (total,) = store.usage(cluster_id, UsageBy.MODEL)
        assert total.prompt_tokens == sum(i % 7 for i in range(count))
        assert total.completion_tokens == sum(i % 5 for i in range(count))
    finally:
        store.close()


async def _never(records: Sequence[UsageRecord]) -> None:
    raise ShipFailed("the relay is away")


async def test_an_append_commits_on_the_loop_unless_the_file_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", _never)
    handed: list[object] = []
    to_thread = asyncio.to_thread

    async def counted(func: object, /, *args: object) -> object:
        handed.append(func)
        return await to_thread(func, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", counted)
    for i in range(20):
        await outbox.append(make(i))
    assert handed == []  # committed right here: no thread and back for a few microseconds
    with outbox._lock:  # the shipper's thread holds the file (taking a batch, say)
        busy = asyncio.ensure_future(outbox.append(make(20)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not busy.done()  # waits in a thread: the loop goes on meanwhile
    async with asyncio.timeout(10):
        await busy
    assert len(handed) == 1 and outbox.pending() == 21
    outbox.close()
    again = Outbox(tmp_path / "outbox.sqlite3", _never)  # committed: a restart finds them
    assert again.pending() == 21
    again.close()


async def test_the_log_stays_small_while_nothing_can_be_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quorum.usage.outbox.CHECKPOINT_EVERY", 50)
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, _never)
    for i in range(600):
        await outbox.append(make(i))
    # A few pages per commit: 600 commits with no copy back would leave about 5 MB here.
    assert os.stat(f"{path}-wal").st_size < 50 * 4 * 4200
    assert outbox.pending() == 600
    outbox.close()


async def test_under_load_a_partial_batch_ships_once_per_linger(tmp_path: Path) -> None:
    """Records that come while a shipment is on its way wait for the linger too: a busy node
    ships a few large batches, not one small batch per round trip to the relay."""
    shipments: list[int] = []

    async def slow(records: Sequence[UsageRecord]) -> None:
        shipments.append(len(records))
        await asyncio.sleep(0.05)  # the round trip to the relay

    outbox = Outbox(tmp_path / "outbox.sqlite3", slow, linger_s=0.25)
    shipper = asyncio.create_task(outbox.run())
    began = time.monotonic()
    for i in range(200):
        await outbox.append(make(i))
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - began
    async with asyncio.timeout(10):
        await outbox.wait_empty()
    shipper.cancel()
    await asyncio.gather(shipper, return_exceptions=True)
    outbox.close()
    assert sum(shipments) == 200
    # One per linger and round trip while records kept coming (about 20 without the linger).
    assert len(shipments) <= elapsed / 0.3 + 2, shipments
