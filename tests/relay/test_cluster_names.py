"""Cluster names are unique per owner, not across the relay (migration 8), on SQLite and
PostgreSQL: a taken name tells nobody else it exists; a name several owners chose is found
by each among their own, and by the admin token only by id."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from quorum.errors import InvalidRequest, NotFound, StoreError
from relay.admin import AdminOps
from relay.migrations import MIGRATIONS
from relay.pg_store import PostgresStore, migration_text
from relay.sqlite_store import SqliteStore
from relay.store import Store
from relay.user_ops import UserOps
from relay.users import Membership, User
from tests.postgres import STORES, fresh_schema, open_kind

T0 = 1_700_000_000.0


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as made:
        yield made


def people(store: Store) -> tuple[User, User, User]:
    op = store.sign_up("id", "op", name="Op", email=None, operator=False, now=T0)
    ann = store.sign_up("id", "ann", name="Ann", email=None, operator=False, now=T0)
    bob = store.sign_up("id", "bob", name="Bob", email=None, operator=False, now=T0)
    return op, ann, bob


def test_names_are_unique_per_owner_and_among_unowned_clusters(store: Store) -> None:
    _, ann, bob = people(store)
    mine, _ = store.create_cluster("home", now=T0, owner_id=ann.id)
    theirs, _ = store.create_cluster("home", now=T0, owner_id=bob.id)
    unowned, _ = store.create_cluster("home", now=T0)
    with pytest.raises(StoreError, match="name"):
        store.create_cluster("home", now=T0, owner_id=ann.id)
    with pytest.raises(StoreError, match="name"):
        store.create_cluster("home", now=T0)
    assert len({mine.id, theirs.id, unowned.id}) == 3
    assert store.cluster(mine.id) == mine
    assert store.cluster("home") is None  # three of them: only an id says which
    store.create_cluster("lab", now=T0, owner_id=bob.id)
    assert store.cluster("lab") is not None  # the only one


def test_each_user_finds_their_own_and_learns_nothing_of_others(store: Store) -> None:
    op, ann, bob = people(store)
    anns = UserOps(store, lambda: T0, ann)
    bobs = UserOps(store, lambda: T0, bob)
    made = anns.create_cluster("home")
    assert bobs.create_cluster("home")["name"] == "home"  # not "it exists already"
    with pytest.raises(InvalidRequest, match="exists already"):
        anns.create_cluster("home")  # their own: they know it
    assert anns.keys("home") == [] and anns.create_key("home", "k")["cluster_id"] == made["id"]
    # Invited to Bob's "home": two of hers now bear the name; an id says which.
    anns.accept(bobs.invite("home")["code"])
    with pytest.raises(InvalidRequest) as ambiguous:
        anns.keys("home")
    assert ambiguous.value.code == "cluster_ambiguous"
    assert [k["cluster_id"] for k in anns.keys(made["id"])] == [made["id"]]
    # A stranger still gets the same 404 as for a made-up name.
    eve = UserOps(store, lambda: T0, store.sign_up("id", "eve", name="E", email=None,
                                                 operator=False, now=T0))  # fmt: skip
    with pytest.raises(NotFound):
        eve.keys("home")
    # The admin token (and the CLI) name an ambiguous cluster by its id.
    admin = AdminOps(store, lambda: T0)
    with pytest.raises(InvalidRequest) as refused:
        admin.keys("home")
    assert refused.value.code == "cluster_ambiguous"
    assert admin.create_cluster("home")["name"] == "home"  # nobody's: a name of its own
    assert store.membership(made["id"], ann.id) is Membership.OWNER
    assert op.operator


def _sqlite_at_7(data: Path) -> None:
    db = sqlite3.connect(data / "relay.sqlite3")
    db.executescript(";".join(MIGRATIONS[:7]) + ";CREATE TABLE schema_version (version INT);")
    db.executemany("INSERT INTO schema_version VALUES (?)", [(v,) for v in range(1, 8)])
    _seed(db.execute)
    db.commit()
    db.close()


def _seed(run: object) -> None:
    execute = run  # (sqlite3's and psycopg's execute take the same arguments here)
    for sql in (
        "INSERT INTO users VALUES ('u1', 'id', 'ann', 'Ann', NULL, 'operator', 1.0, NULL)",
        "INSERT INTO clusters (id, name, token_hash, created_at) VALUES ('c1', 'home', 'h', 1.0)",
        "INSERT INTO clusters (id, name, token_hash, created_at) VALUES ('c2', 'lab', 'g', 1.0)",
        "INSERT INTO cluster_members VALUES ('c1', 'u1', 'owner', 1.0)",
        "INSERT INTO api_keys (id, cluster_id, name, prefix, key_hash, created_at) "
        "VALUES ('k1', 'c1', 'k', 'abcd1234', 'kh', 1.0)",
    ):
        execute(sql)  # type: ignore[operator]


def _check_migrated(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS) == 8  # type: ignore[attr-defined]
    assert [(c.id, c.name) for c in store.clusters()] == [("c1", "home"), ("c2", "lab")]
    assert [k.id for k in store.keys("c1")] == ["k1"]  # still its cluster's
    assert store.owned() == {"c1": "u1"}
    # "home" is Ann's now (taken by her again: refused), "lab" nobody's.
    with pytest.raises(StoreError):
        store.create_cluster("home", now=T0, owner_id="u1")
    with pytest.raises(StoreError):
        store.create_cluster("lab", now=T0)
    store.create_cluster("home", now=T0)
    # Foreign keys hold again after the rebuild.
    with pytest.raises(StoreError):
        store.create_key("nope", name="k", models=None, expires_at=None, now=T0)


def test_a_version_7_sqlite_store_is_rebuilt_keeping_its_rows(tmp_path: Path) -> None:
    _sqlite_at_7(tmp_path)
    store = SqliteStore(tmp_path)
    try:
        _check_migrated(store)
        with sqlite3.connect(tmp_path / "relay.sqlite3") as db:
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        store.close()


def test_a_version_7_postgresql_store_is_migrated_keeping_its_rows() -> None:
    with fresh_schema() as url:
        with psycopg.connect(url) as conn:
            for version in range(1, 8):
                conn.execute(migration_text(version) or "")
            conn.execute("CREATE TABLE schema_version (version INTEGER)")
            conn.execute("INSERT INTO schema_version SELECT generate_series(1, 7)")
            _seed(conn.execute)
        store = PostgresStore(url)
        try:
            _check_migrated(store)
        finally:
            store.close()
