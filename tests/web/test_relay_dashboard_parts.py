"""The dashboard's pure parts: sessions on a fake clock, the origin rule, node states, the
usage buckets and series, and the store query behind them."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorum.protocol import ModelInfo, RequestUsage
from relay import dashboard_data as data
from relay.dashboard_auth import Sessions, same_origin, same_token
from relay.sqlite_store import SqliteStore
from relay.store import Cluster, NodeSeen, UsagePoint

T0 = 1_700_000_000.0
HOUR_MS = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_until_idle_or_too_old_and_ends_at_sign_out() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock, idle_s=10.0, absolute_s=25.0)
    sid, session = sessions.create()
    assert sessions.get(sid) is not None and sessions.get("other") is None
    assert sessions.remaining_s(session) == 25.0
    clock.now += 9.0
    assert sessions.get(sid) is not None  # used: the idle time starts again
    clock.now += 9.0
    assert sessions.get(sid) is not None
    clock.now += 9.0  # 27 s after sign-in: too old, however busy
    assert sessions.get(sid) is None and len(sessions) == 0
    sid, _ = sessions.create()
    clock.now += 10.0
    assert sessions.get(sid) is None  # idle
    sid, _ = sessions.create()
    sessions.end(sid)
    assert sessions.get(sid) is None


def test_sessions_keep_only_hashes_and_are_bounded() -> None:
    sessions = Sessions(clock=Clock(), max_sessions=3)
    made = [sessions.create()[0] for _ in range(5)]
    assert len(sessions) == 3
    assert [sessions.get(s) is not None for s in made] == [False, False, True, True, True]
    assert not any(s in repr(vars(sessions)) for s in made)


def test_tokens_compare_whole() -> None:
    assert same_token("abc", "abc")
    assert not same_token("ab", "abc") and not same_token(None, "abc") and not same_token("", "a")


@pytest.mark.parametrize(
    ("origin", "site", "secure", "ok"),
    [
        (None, None, False, True),  # a script or curl: the token decides
        ("http://relay.test:8443", "same-origin", False, True),
        ("https://relay.test:8443", None, False, True),  # TLS ended at a proxy
        ("http://relay.test:8443", None, True, False),  # downgraded
        ("https://relay.test:8443", None, True, True),
        ("http://evil.test", None, False, False),
        ("http://relay.test:8443.evil.test", None, False, False),
        ("null", None, False, False),
        (None, "cross-site", False, False),
        (None, "same-site", False, False),
        (None, "none", False, True),
        ("javascript://relay.test:8443", None, False, False),
    ],
)
def test_only_the_relay_own_pages_may_change_things(
    origin: str | None, site: str | None, secure: bool, ok: bool
) -> None:
    assert same_origin(origin, site, "relay.test:8443", secure) is ok


def test_a_window_is_whole_buckets_ending_with_now() -> None:
    win = data.window("24h", T0)
    assert len(win.buckets) == 24 and win.bucket_ms == HOUR_MS
    assert win.buckets[-1] <= T0 * 1000 < win.buckets[-1] + HOUR_MS
    assert win.since_ms == win.buckets[0] and all(b % HOUR_MS == 0 for b in win.buckets)
    assert data.window("nonsense", T0).name == data.DEFAULT_WINDOW
    assert len(data.window("1h", T0).buckets) == 30


def model(name: str, type_: str = "llm", service: str = "ollama") -> ModelInfo:
    return ModelInfo(name, type_, service)


def link(node_id: str, *, last_seen: float | None = T0, draining: bool = False) -> data.LinkView:
    return data.LinkView(
        "c1", node_id, node_id, "10.0.0.9", T0 - 30, 2, draining, (model("m"),), last_seen
    )


def test_a_node_without_a_tunnel_is_offline_at_once() -> None:
    clusters = [Cluster("c1", "home", 0.0)]
    ages = {"a": 5, "b": 5, "c": 70, "d": 5}
    seen = [NodeSeen("c1", n, n, (model("m"),), T0 - age) for n, age in ages.items()]
    links = [link("a"), link("b", draining=True), link("c", last_seen=T0 - 61)]
    rows = {r["node_id"]: r for r in data.fleet(clusters, seen, links, T0)}
    assert {n: r["state"] for n, r in rows.items()} == {
        "a": "online",
        "b": "draining",
        "c": "silent",
        "d": "offline",  # its heartbeat is 5 s old, but its tunnel is closed
    }
    assert rows["a"]["route"] == {"via": "tunnel", "remote": "10.0.0.9", "connected_s": 30.0}
    assert rows["a"]["in_flight"] == 2 and rows["d"]["in_flight"] is None
    # The store lags the tunnel (it is written in batches): the fresher heartbeat counts.
    assert rows["a"]["last_seen"] == T0 and rows["c"]["last_seen"] == T0 - 61
    assert rows["d"]["last_seen"] == T0 - 5 and rows["d"]["seen_s_ago"] == 5.0


def test_models_list_every_holder_and_type() -> None:
    clusters = [Cluster("c1", "home", 0.0)]
    seen = [
        NodeSeen("c1", "a", "a", (model("m"), model("w", "stt", "asr")), T0),
        NodeSeen("c1", "b", "b", (model("m", service="vllm"),), T0),
    ]
    links = [link("a")]  # b is gone
    rows = data.fleet(clusters, seen, links, T0)
    found = {m["id"]: m for m in data.models(rows, seen, links)}
    # The tunnel's model list replaces the stored one for a connected node.
    assert [(h["node"], h["state"]) for h in found["m"]["holders"]] == [
        ("a", "online"),
        ("b", "offline"),
    ]
    assert found["m"]["online"] == 1
    assert "w" not in found  # a's live list has only m


def point(bucket: int, model_: str, node: str, key: str | None, n: int, ttfb: float) -> UsagePoint:
    return UsagePoint(bucket, model_, node, key, n, 0, n * 10, n * 20, ttfb * n, n)


def test_series_sum_by_group_with_exact_averages_and_an_other_group() -> None:
    win = data.window("1h", T0)
    b0, b1 = win.buckets[-2], win.buckets[-1]
    points = [
        point(b0, "m1", "a", "k1", 2, 100.0),
        point(b1, "m1", "b", "k1", 1, 400.0),
        point(b1, "m2", "a", None, 1, 50.0),
        UsagePoint(b1, "m3", "a", None, 1, 1, 5, 0, 0.0, 0),  # an error: no first byte
    ]
    by_model = data.series(points, win, "model")
    assert [g["label"] for g in by_model] == ["m1", "m2", "m3"]
    m1 = by_model[0]
    assert (m1["requests"], m1["total_tokens"], m1["avg_ttfb_ms"]) == (3, 90, 200.0)
    assert m1["points"][-2:] == [[2, 60, 100.0], [1, 30, 400.0]]
    assert m1["points"][0] == [0, 0, None]
    assert by_model[2]["avg_ttfb_ms"] is None and by_model[2]["errors"] == 1
    capped = data.series(points, win, "model", max_groups=2)
    assert [(g["id"], g["label"], g["requests"]) for g in capped] == [
        ("m1", "m1", 3),
        (None, "other", 2),
    ]
    labels = {"k1": "qk_1234abcd (ci)", None: "no key (cluster)"}
    by_key = data.series(points, win, "key", labels)
    assert [(g["label"], g["requests"]) for g in by_key] == [
        ("qk_1234abcd (ci)", 3),
        ("no key (cluster)", 2),
    ]


def test_clocks_alone_do_not_count_as_a_change() -> None:
    clusters = [Cluster("c1", "home", 0.0)]
    seen = [NodeSeen("c1", "a", "a", (model("m"),), T0)]

    def snap(now: float) -> data.JSON:
        return data.snapshot(
            clusters=clusters, seen=seen, links=[link("a")], keys_=[], usage_of=None, now=now
        )

    assert data.without_clocks(snap(T0)) == data.without_clocks(snap(T0 + 20))
    assert data.without_clocks(snap(T0)) != data.without_clocks(snap(T0 + 61))  # now silent


def record(rid: str, minute: int, **kw: object) -> RequestUsage:
    base: dict[str, object] = {
        "request_id": rid,
        "time_ms": int(T0 * 1000) + minute * 60_000,
        "model": "m",
        "endpoint": "chat",
        "route": "relay",
        "node": "a",
        "status": 200,
        "duration_ms": 10.0,
        "ttfb_ms": 4.0,
        "prompt_tokens": 3,
        "completion_tokens": 4,
    }
    base.update(kw)
    return RequestUsage(**base)  # type: ignore[arg-type]


def test_the_store_sums_usage_in_buckets(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    try:
        cluster, _ = store.create_cluster("home", now=T0)
        other, _ = store.create_cluster("away", now=T0)
        store.add_usage(
            cluster.id,
            [
                record("r1", 0),
                record("r2", 1, ttfb_ms=None, status=502, error="engine_error"),
                record("r3", 1, key_id="k1"),
                record("r4", 90, model="n"),
                record("old", -600),
            ],
        )
        store.add_usage(other.id, [record("x", 0)])
        since = int(T0 * 1000) // HOUR_MS * HOUR_MS
        points = store.usage_series(cluster.id, since_ms=since, bucket_ms=HOUR_MS)
    finally:
        store.close()
    first = since
    assert [(p.bucket_ms, p.model, p.key_id, p.requests, p.errors) for p in points] == [
        (first, "m", None, 2, 1),
        (first, "m", "k1", 1, 0),
        (first + HOUR_MS, "n", None, 1, 0),
    ]
    assert (points[0].ttfb_ms_sum, points[0].ttfb_count) == (4.0, 1)
    assert (points[0].prompt_tokens, points[0].completion_tokens) == (6, 8)
