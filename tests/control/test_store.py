"""The store, on SQLite and on PostgreSQL alike: migrations, keys at rest, presence,
exactly-once usage, aggregation. (The tests of the SQLite file itself name ``tmp_path``.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.errors import StoreError
from quorum.protocol import ModelInfo, RequestUsage
from relay.keys import KeyState
from relay.migrations import MIGRATIONS
from relay.node_keys import Binding
from relay.open_store import open_store
from relay.sqlite_store import SqliteStore
from relay.store import NodeSeen, Store, UsageBy
from tests.postgres import STORES, held_bytes, open_kind

DAY_MS = 86_400_000
T0 = 1_700_000_000.0


def record(rid: str, **kw: object) -> RequestUsage:
    base: dict[str, object] = {
        "request_id": rid,
        "time_ms": int(T0 * 1000),
        "model": "m",
        "endpoint": "chat",
        "route": "local",
        "node": "a",
        "status": 200,
        "duration_ms": 10.0,
        "ttfb_ms": 2.0,
        "prompt_tokens": 3,
        "completion_tokens": 4,
    }
    base.update(kw)
    return RequestUsage(**base)  # type: ignore[arg-type]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each test of the interface runs on both stores, opened as the relay opens them."""
    with open_kind(request.param, tmp_path) as made:
        yield made


def files_bytes(data: Path) -> bytes:
    """Every byte the store left on disk: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(data.glob("relay.sqlite3*")))


def test_a_version_one_store_is_migrated_in_place(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    db.executescript(MIGRATIONS[0] + "CREATE TABLE schema_version (version INTEGER);")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO clusters VALUES ('c1', 'home', 'h', 1.0)")
    db.commit()
    db.close()
    store = SqliteStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS) == 8
    assert [c.name for c in store.clusters()] == ["home"]
    store.create_key("c1", name="k", models=None, expires_at=None, now=T0)
    store.close()
    again = SqliteStore(tmp_path)  # opening twice applies nothing twice
    assert again.schema_version == 8 and len(again.keys()) == 1


def test_keys_and_tokens_are_never_stored_in_clear(store: Store, tmp_path: Path) -> None:
    cluster, token = store.create_cluster("home", now=T0)
    key, secret = store.create_key(cluster.id, name="phone", models=None, expires_at=None, now=T0)
    rotated, secret2 = store.rotate_key(key.id, now=T0 + 1, expires_at=None)
    assert store.cluster_for_token(token) == cluster
    assert store.key_for_secret(secret2) == rotated
    data = held_bytes(store, tmp_path)
    for s in (token, secret, secret2):
        assert s.encode() not in data
        assert s[-16:].encode() not in data  # not even a long run of its random part
    assert key.prefix.encode() in data  # the visible prefix is meant to be there


def test_key_lifecycle(store: Store) -> None:
    home, _ = store.create_cluster("home", now=T0)
    key, secret = store.create_key(
        home.id, name="phone", models=("a", "b"), expires_at=T0 + 100, now=T0
    )
    assert key.models == ("a", "b") and key.state(T0) is KeyState.ACTIVE
    assert key.state(T0 + 100) is KeyState.EXPIRED
    assert store.key(key.id) == store.key(key.prefix) == store.key(key.shown) == key
    assert store.key_for_secret(secret) == key
    assert store.key_for_secret(secret + "x") is None
    store.touch_key(key.id, now=T0 + 5)
    store.touch_key(key.id, now=T0 + 6)  # within a minute: not written again
    touched = store.key(key.id)
    assert touched is not None and touched.last_used_at == T0 + 5
    revoked = store.revoke_key(key.id, now=T0 + 10)
    assert revoked.state(T0 + 10) is KeyState.REVOKED
    assert store.revoke_key(key.id, now=T0 + 20).revoked_at == T0 + 10  # idempotent
    with pytest.raises(StoreError):
        store.rotate_key(key.id, now=T0 + 30, expires_at=None)
    with pytest.raises(StoreError):
        store.create_key("nope", name="", models=None, expires_at=None, now=T0)


def test_rotation_keeps_name_and_models_and_revokes_the_old_key(store: Store) -> None:
    home, _ = store.create_cluster("home", now=T0)
    old, old_secret = store.create_key(home.id, name="ci", models=("a",), expires_at=None, now=T0)
    new, new_secret = store.rotate_key(old.id, now=T0 + 1, expires_at=T0 + 50)
    assert (new.name, new.models, new.expires_at, new.cluster_id) == (
        "ci",
        ("a",),
        T0 + 50,
        home.id,
    )
    assert new.prefix != old.prefix and new_secret != old_secret
    stale = store.key_for_secret(old_secret)
    assert stale is not None and stale.state(T0 + 1) is KeyState.REVOKED


def test_clusters_are_unique_by_name_and_token(store: Store) -> None:
    store.create_cluster("home", token="qc_" + "a" * 30, now=T0)
    with pytest.raises(StoreError, match="name"):
        store.create_cluster("home", now=T0)
    with pytest.raises(StoreError, match="token"):
        store.create_cluster("other", token="qc_" + "a" * 30, now=T0)
    with pytest.raises(StoreError):
        store.create_cluster("  ", now=T0)
    assert store.cluster("home") is not None and store.cluster("nope") is None


def test_presence_is_an_upsert_per_cluster_and_node(store: Store) -> None:
    a, _ = store.create_cluster("a", now=T0)
    b, _ = store.create_cluster("b", now=T0)
    models = (ModelInfo("m", "llm", "vllm"),)
    store.record_presence([NodeSeen(a.id, "n1", "studio", models, T0)])
    store.record_presence([NodeSeen(a.id, "n1", "studio2", (), T0 + 30)])
    store.record_presence([NodeSeen(b.id, "n1", "other", models, T0)])  # same id, other cluster
    (seen,) = store.nodes(a.id)
    assert (seen.name, seen.models, seen.last_seen) == ("studio2", (), T0 + 30)
    (other,) = store.nodes(b.id)
    assert other.models == models
    assert len(store.nodes()) == 2


def test_usage_is_stored_once_per_cluster_and_request_id(store: Store) -> None:
    a, _ = store.create_cluster("a", now=T0)
    b, _ = store.create_cluster("b", now=T0)
    assert store.add_usage(a.id, [record("r1"), record("r2"), record("r1")]) == (2, 1)
    assert store.add_usage(a.id, [record("r1"), record("r3")]) == (1, 1)
    # The same id in another cluster is another request: one cluster cannot shadow another's.
    assert store.add_usage(b.id, [record("r1")]) == (1, 0)
    assert len(store.usage_records(a.id)) == 3
    assert store.usage_records(a.id, limit=1)[0].request_id in {"r1", "r2", "r3"}


def test_usage_aggregation_by_model_node_key_and_day(store: Store) -> None:
    c, _ = store.create_cluster("c", now=T0)
    day0 = int(T0 * 1000)
    store.add_usage(
        c.id,
        [
            record("1", model="x", node="a", key_id="k1", prompt_tokens=1, completion_tokens=2),
            record("2", model="x", node="b", key_id=None, prompt_tokens=3, completion_tokens=None),
            record("3", model="y", node="a", key_id="k1", status=502, error="engine_error"),
            record("4", model="y", node="a", key_id="k2", time_ms=day0 + DAY_MS),
        ],
    )
    by_model = {g.group: g for g in store.usage(c.id, UsageBy.MODEL)}
    assert (by_model["x"].requests, by_model["x"].prompt_tokens) == (2, 4)
    assert by_model["x"].completion_tokens == 2
    assert (by_model["y"].requests, by_model["y"].errors) == (2, 1)
    assert {g.group: g.requests for g in store.usage(c.id, UsageBy.NODE)} == {"a": 3, "b": 1}
    assert {g.group: g.requests for g in store.usage(c.id, UsageBy.KEY)} == {
        None: 1,
        "k1": 2,
        "k2": 1,
    }
    assert {g.group: g.requests for g in store.usage(c.id, UsageBy.DAY)} == {
        "2023-11-14": 3,
        "2023-11-15": 1,
    }
    assert [g.requests for g in store.usage(c.id, UsageBy.MODEL, since_ms=day0 + 1)] == [1]
    assert store.usage(c.id, UsageBy.MODEL, until_ms=day0) == []


def test_the_store_file_is_private(tmp_path: Path) -> None:
    made = open_store(tmp_path)
    made.create_cluster("home", now=T0)  # writes the -wal file too
    made.close()
    for path in tmp_path.glob("relay.sqlite3*"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    (tmp_path / "relay.sqlite3").chmod(0o644)  # made by an older version
    open_store(tmp_path).close()
    assert (tmp_path / "relay.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_file_that_is_not_a_store_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "relay.sqlite3").write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StoreError) as damaged:
        open_store(tmp_path)
    text = str(damaged.value)
    assert str(tmp_path / "relay.sqlite3") in text and "is damaged" in text
    assert f"mv {tmp_path / 'relay.sqlite3'} {tmp_path / 'relay.sqlite3'}.damaged" in text


def test_a_damaged_page_is_found_at_open(tmp_path: Path) -> None:
    made = open_store(tmp_path)
    cluster, _ = made.create_cluster("home", now=T0)
    made.add_usage(cluster.id, [record(f"r{i}", model="m" * 200) for i in range(300)])
    made.close()
    with sqlite3.connect(tmp_path / "relay.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "relay.sqlite3"
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[5 * 4096 : 5 * 4096 + 200] = b"\xff" * 200  # a page in the middle, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as damaged:
        open_store(tmp_path)
    assert "is damaged" in str(damaged.value)


def test_the_cli_says_what_to_do_with_a_damaged_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "relay.sqlite3").write_bytes(b"garbage " * 1000)
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "cluster", "list", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "is damaged" in done.stderr and ".damaged" in done.stderr


def test_a_node_id_is_bound_to_its_first_key_and_a_removed_key_stays_out(
    store: Store,
) -> None:
    cluster, _ = store.create_cluster("home", now=T0)
    bind = store.bind_node_key
    assert bind(cluster.id, "n1", "k1", now=T0) is Binding.BOUND
    assert bind(cluster.id, "n1", "k1", now=T0 + 1) is Binding.SAME
    assert bind(cluster.id, "n1", "k2", now=T0 + 2) is Binding.OTHER
    assert store.remove_node(cluster.id, "n1", now=T0 + 3)
    assert not store.remove_node(cluster.id, "n1", now=T0 + 4)  # once
    assert bind(cluster.id, "n1", "k1", now=T0 + 5) is Binding.REMOVED
    assert bind(cluster.id, "n9", "k1", now=T0 + 5) is Binding.REMOVED  # under any id
    assert bind(cluster.id, "n1", "k3", now=T0 + 6) is Binding.BOUND  # a new machine
    keys = [(k.node_id, k.fingerprint, k.removed_at) for k in store.node_keys(cluster.id)]
    assert keys == [("n1", "k1", T0 + 3), ("n1", "k3", None)]
    assert bind(cluster.id, "n9", "k1", now=T0 + 7) is Binding.REMOVED  # still out
