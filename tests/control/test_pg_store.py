"""What the PostgreSQL store adds to the interface's suite (``test_store.py`` runs that on
both stores): several relays opening, writing and binding at once, its migrations, and
its errors."""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from quorum.errors import StoreError
from quorum.protocol import RequestUsage
from relay.migrations import MIGRATIONS
from relay.node_keys import Binding
from relay.open_store import open_store
from relay.pg_store import PostgresStore, migration_text, redacted
from tests.postgres import fresh_schema

T0 = 1_700_000_000.0


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as made:
        yield made


def usage(rid: str) -> RequestUsage:
    return RequestUsage(rid, int(T0 * 1000), "m", "chat", "relay", "a", 200, 5.0)


def test_relays_that_start_together_apply_each_migration_once(url: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresStore(url, max_size=2), range(4)))
    try:
        assert {s.schema_version for s in stores} == {len(MIGRATIONS)}
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        for s in stores:
            s.close()


def test_a_version_one_schema_is_migrated_in_place(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(migration_text(1) or "")
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO clusters VALUES ('c1', 'home', 'h', 1.0)")
    store = PostgresStore(url)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert [c.name for c in store.clusters()] == ["home"]
        store.create_key("c1", name="k", models=None, expires_at=None, now=T0)
    finally:
        store.close()
    again = PostgresStore(url)  # opening again applies nothing twice
    try:
        assert again.schema_version == len(MIGRATIONS) and len(again.keys()) == 1
    finally:
        again.close()


def test_times_keep_their_fraction_of_a_second(url: str) -> None:
    """PostgreSQL's REAL would round a 2023 timestamp to about two minutes."""
    store = PostgresStore(url)
    try:
        made, _ = store.create_cluster("home", now=T0 + 0.125)
        assert store.cluster(made.id) == made and made.created_at == T0 + 0.125
    finally:
        store.close()


def test_usage_sent_to_two_relays_at_once_is_stored_once(url: str) -> None:
    one, two = PostgresStore(url), PostgresStore(url)
    try:
        cluster, _ = one.create_cluster("home", now=T0)
        ids = [f"r{i}" for i in range(400)]
        batches = [ids[i : i + 50] for i in range(0, 400, 50)]

        def ship(n: int) -> tuple[int, int]:
            store = (one, two)[n % 2]
            # Every batch twice, once through each relay, overlapping its neighbour by half.
            rids = batches[n // 2] + batches[(n // 2 + 1) % len(batches)][:25]
            return store.add_usage(cluster.id, [usage(r) for r in rids])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ship, range(2 * len(batches))))
        assert sum(accepted for accepted, _ in results) == len(ids)
        assert sum(a + d for a, d in results) == 2 * (400 + 25 * len(batches))
        assert len(two.usage_records(cluster.id, limit=1000)) == len(ids)
    finally:
        one.close()
        two.close()


def test_one_key_wins_a_node_id_bound_through_two_relays_at_once(url: str) -> None:
    one, two = PostgresStore(url), PostgresStore(url)
    try:
        cluster, _ = one.create_cluster("home", now=T0)
        for n in range(10):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                a = pool.submit(one.bind_node_key, cluster.id, f"n{n}", f"a{n}", now=T0)
                b = pool.submit(two.bind_node_key, cluster.id, f"n{n}", f"b{n}", now=T0)
                outcomes = sorted([a.result(), b.result()])
            assert outcomes == sorted([Binding.BOUND, Binding.OTHER])
        assert len(one.node_keys(cluster.id)) == 10
    finally:
        one.close()
        two.close()


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://relay:s3cret-pw@127.0.0.1:{port}/quorum"
    with pytest.raises(StoreError) as refused:
        open_store(tmp_path, url)
    text = str(refused.value)
    assert "s3cret-pw" not in text
    assert f"postgresql://relay:***@127.0.0.1:{port}/quorum" in text and "cannot be used" in text


def test_a_store_url_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="postgresql://"):
        open_store(tmp_path, "mysql://root@localhost/quorum")


def test_redaction_keeps_everything_but_the_password() -> None:
    assert redacted("postgresql://u:p@h:5/d?sslmode=require") == (
        "postgresql://u:***@h:5/d?sslmode=require"
    )
    assert redacted("postgresql://h/d") == "postgresql://h/d"


def test_the_cli_manages_a_postgresql_store(url: str, tmp_path: Path) -> None:
    from relay.cli import main

    assert main(["cluster", "create", "home", "--data", str(tmp_path), "--store", url]) == 0
    store = PostgresStore(url)
    try:
        assert [c.name for c in store.clusters()] == ["home"]
    finally:
        store.close()
    assert not (tmp_path / "relay.sqlite3").exists()  # nothing went to SQLite


def test_first_sign_ups_through_several_relays_make_exactly_one_operator(url: str) -> None:
    stores = [PostgresStore(url, max_size=2) for _ in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            users = list(
                pool.map(
                    lambda n: stores[n].sign_up(
                        "id", f"s{n}", name=f"U{n}", email=None, operator=False, now=T0
                    ),
                    range(4),
                )
            )
        assert sum(u.operator for u in users) == 1
        assert len(stores[0].users()) == 4
    finally:
        for s in stores:
            s.close()
