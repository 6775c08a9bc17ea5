"""Three real relay processes on loopback sharing one PostgreSQL store and one NATS
(a fresh schema and subject prefix of their own), with real nodes failing over
between them: a model held at relay 1 reaches a node on relay 2 and an app calling
relay 3, a revoked key fails at every relay, and relay 1's death moves its node."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nats
import nats.aio.client
import nats.errors
import openai
import pytest

from quorum.app import Node
from quorum.secure.hop import HOP_PATH
from relay.pg_store import PostgresStore
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.postgres import fresh_schema
from tests.relay.harness import Relay, relay_cli
from tests.relay.test_relay_e2e import holders, status, wait_until

MODEL = "Qwen/Qwen3-0.6B"
NATS = "nats://127.0.0.1:4222"
MOVE_WITHIN_S = 35.0


@dataclass
class Group:
    store: str
    relays: list[Relay]
    token: str
    keys: list[str]
    a: Node
    b: Node
    prefix: str


def _value(out: str, label: str) -> str:
    for line in out.splitlines():
        if line.startswith(label):
            return line.split()[1]
    raise AssertionError(f"no {label} in {out!r}")


def app(relay: Relay, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=relay.http + "/v1", api_key=key, max_retries=0, timeout=timeout(30)
    )


def ask(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )


@pytest.fixture(scope="module")
def group(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp = tmp_path_factory.mktemp("mesh")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    vllm = FakeVLLM(chunks=6, chunk_delay=0.01)
    engine = bg.run(vllm.start())
    with fresh_schema() as store:
        shared = ("--store", store, "--nats", NATS, "--nats-prefix", prefix)
        data = [tmp / f"relay{n}" for n in (1, 2, 3)]
        for d in data:
            d.mkdir()
        token = _value(relay_cli(data[0], "cluster", "create", "home", "--store", store), "token")
        keys = [
            _value(
                relay_cli(data[0], "key", "create", "--cluster", "home", "--store", store), "key"
            )
            for _ in range(2)
        ]
        relays = [Relay(d, None, *shared).start() for d in data]
        urls = [r.url for r in relays]

        def node(name: str, first: int, services: list[dict[str, Any]]) -> Node:
            config = node_config(
                tmp / name,
                node={"name": name},
                cluster={"token": token},
                relay={"url": urls[first], "urls": urls[first + 1 :] + urls[:first]},
                services=services,
            )
            return bg.run(start_node(config))

        a = node("node-a", 0, [{"name": "vllm", "url": engine}])
        b = node("node-b", 1, [])
        try:
            yield Group(store, relays, token, keys, a, b, prefix)
        finally:
            for n in (a, b):
                bg.run(n.stop())
            for r in relays:
                r.kill()
            bg.run(vllm.stop())


def test_a_model_at_relay_1_streams_to_a_node_on_relay_2(group: Group) -> None:
    wait_until(
        lambda: any(h["route"] == "relay" for h in holders(group.b, MODEL)), 15, "A's model at B"
    )
    assert status(group.a)["relay"]["url"] == group.relays[0].url
    assert status(group.b)["relay"]["url"] == group.relays[1].url
    with openai.OpenAI(
        base_url=group.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
    ) as c:
        raw = ask(c, "across two relays")
        assert raw.parse().choices[0].message.content == "You said: across two relays"
        assert (raw.headers["x-quorum-route"], raw.headers["x-quorum-node"]) == (
            "relay",
            "node-a",
        )
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a b c d"}], stream=True
        )
        parts = [ch.choices[0].delta.content or "" for ch in stream if ch.choices]
        assert "".join(parts) == "You said: a b c d" and len(parts) > 2


def test_200_concurrent_streams_cross_relays(group: Group) -> None:
    wait_until(lambda: bool(holders(group.b, MODEL)), 15, "A's model at B")

    async def many() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=group.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(60)
        ) as c:

            async def one(i: int) -> str:
                stream = await c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"n{i}"}], stream=True
                )
                return "".join(
                    [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
                )

            return await asyncio.gather(*(one(i) for i in range(200)))

    assert asyncio.run(many()) == [f"You said: n{i}" for i in range(200)]


def test_an_app_calls_relay_3_for_a_model_at_relay_1(group: Group) -> None:
    third = group.relays[2]
    with app(third, group.keys[0]) as c:
        wait_until(lambda: MODEL in [m.id for m in c.models.list()], 15, "A's model at relay 3")
        raw = ask(c, "from an app")
        assert raw.parse().choices[0].message.content == "You said: from an app"
        assert (raw.headers["x-quorum-route"], raw.headers["x-quorum-node"]) == (
            "relay",
            "node-a",
        )
    with urllib.request.urlopen(third.http + "/metrics", timeout=timeout(5)) as resp:
        metrics = resp.read().decode()
    gauges = dict(
        line.split() for line in metrics.splitlines() if line.startswith("quorum_relay_mesh")
    )
    # Relays 1 and 2, and the nodes they hold (A and B); announcements went out.
    assert float(gauges["quorum_relay_mesh_relays"]) == 2
    assert float(gauges["quorum_relay_mesh_nodes"]) == 2
    assert float(gauges["quorum_relay_mesh_announcements"]) > 0


def test_relay_1_passes_on_only_ciphertext_of_an_apps_request_at_relay_3(
    group: Group, bg: LoopThread
) -> None:
    """The public /v1's hop runs in TLS from relay 3 to node A: what crosses the mesh
    (NATS) for that stream, through relay 1, holds neither the prompt nor the answer."""
    prompt = f"the secret plan {uuid.uuid4().hex}"
    frames: list[bytes] = []

    async def listen() -> tuple[nats.aio.client.Client, Any]:
        nc = await nats.connect(NATS)
        sub = await nc.subscribe(f"{group.prefix}.mesh.>")
        await nc.flush()
        return nc, sub

    async def collect(nc: nats.aio.client.Client, sub: Any) -> None:
        await nc.flush()  # what the relays sent before the answer reached the app is here
        while True:
            try:
                frames.append((await sub.next_msg(timeout=timeout(0.5))).data)
            except nats.errors.TimeoutError:
                return

    nc, sub = bg.run(listen())
    try:
        with app(group.relays[2], group.keys[0]) as c:
            wait_until(lambda: MODEL in [m.id for m in c.models.list()], 15, "A's model")
            raw = ask(c, prompt)
        bg.run(collect(nc, sub))
    finally:
        bg.run(nc.close())
    assert raw.parse().choices[0].message.content == f"You said: {prompt}"
    assert raw.headers["x-quorum-node"] == "node-a"
    crossed = b"".join(frames)
    assert HOP_PATH.encode() in crossed  # the stream did cross the mesh, as a hop
    assert prompt.encode() not in crossed and b"You said" not in crossed
    assert b"the secret plan" not in crossed


def test_a_revoked_key_fails_at_every_relay(group: Group) -> None:
    revoked = group.keys[1]
    for relay in group.relays:  # good everywhere first
        with app(relay, revoked) as c:
            wait_until(lambda c=c: MODEL in [m.id for m in c.models.list()], 15, "the model")
    prefix = revoked.split("_")[1]
    relay_cli(group.relays[0].data, "key", "revoke", f"qk_{prefix}", "--store", group.store)
    for relay in group.relays:  # the very next request, at each relay
        with app(relay, revoked) as c, pytest.raises(openai.AuthenticationError, match="revoked"):
            ask(c, "still?")


def test_usage_of_500_requests_across_the_relays_one_restarted_is_stored_once(
    group: Group,
) -> None:
    key = group.keys[0]
    store = PostgresStore(group.store)
    try:
        (cluster,) = store.clusters()
        stored = store.key(key.split("_")[1])
        assert stored is not None

        def records() -> list[Any]:
            return [r for r in store.usage_records(cluster.id, limit=5000) if r.key_id == stored.id]

        before = len(records())

        async def batch(first: int, count: int) -> list[int]:
            clients = [
                openai.AsyncOpenAI(
                    base_url=r.http + "/v1", api_key=key, max_retries=0, timeout=timeout(60)
                )
                for r in group.relays
            ]
            try:
                answers = await asyncio.gather(
                    *(
                        clients[n % 3].chat.completions.with_raw_response.create(
                            model=MODEL, messages=[{"role": "user", "content": f"r{n}"}]
                        )
                        for n in range(first, first + count)
                    )
                )
                return [a.status_code for a in answers]
            finally:
                for c in clients:
                    await c.close()

        statuses = asyncio.run(batch(0, 250))
        third = group.relays[2]
        assert third.stop() == 0  # writes what it recorded, then exits
        third.start()
        with app(third, key) as c:
            wait_until(lambda: MODEL in [m.id for m in c.models.list()], 15, "the model again")
        statuses += asyncio.run(batch(250, 250))
        answered = statuses.count(200)
        assert answered == 500
        wait_until(lambda: len(records()) - before >= 500, 30, "500 usage records")
        assert len(records()) - before == 500
        assert len({r.request_id for r in records()}) == len(records())
    finally:
        store.close()


def test_relay_1_dies_and_its_node_moves_within_35_s(group: Group) -> None:
    third = group.relays[2]
    with app(third, group.keys[0]) as c:
        ask(c, "before")  # A is reachable through relay 1
        group.relays[0].kill()
        killed = time.monotonic()
        deadline = killed + MOVE_WITHIN_S
        while True:
            try:
                raw = ask(c, "after")
                break
            except openai.APIStatusError as exc:
                assert exc.status_code in (502, 503, 504), exc
                assert time.monotonic() < deadline, "the route did not come back in time"
                time.sleep(0.2)
        took = time.monotonic() - killed
    assert raw.parse().choices[0].message.content == "You said: after"
    assert took < MOVE_WITHIN_S
    assert status(group.a)["relay"]["url"] != group.relays[0].url
    # And node B, on relay 2, reaches A again too.
    with openai.OpenAI(
        base_url=group.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
    ) as b:
        wait_until(lambda: bool(holders(group.b, MODEL)), 15, "A's model at B again")
        assert ask(b, "again").parse().choices[0].message.content == "You said: again"


def test_a_relay_that_drains_sends_its_nodes_to_another(group: Group) -> None:
    second, third = group.relays[1], group.relays[2]
    wait_until(lambda: status(group.b)["relay"]["connected"], 15, "B connected")
    assert status(group.b)["relay"]["url"] == second.url
    assert second.stop() == 0  # SIGTERM: GOAWAY to its nodes, drain, exit
    wait_until(
        lambda: (
            status(group.b)["relay"]["url"] == third.url and status(group.b)["relay"]["connected"]
        ),
        MOVE_WITHIN_S,
        "B on relay 3",
    )
    wait_until(lambda: bool(holders(group.b, MODEL)), MOVE_WITHIN_S, "A's model at B")
    moved_at_ms = int(time.time() * 1000)
    with openai.OpenAI(
        base_url=group.b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
    ) as b:
        assert ask(b, "after the drain").parse().choices[0].message.content == (
            "You said: after the drain"
        )
    # B's usage goes to the relay it is on now (its relay.url is gone), once.
    store = PostgresStore(group.store)
    try:
        (cluster,) = store.clusters()

        def shipped() -> list[Any]:
            return [
                r
                for r in store.usage_records(cluster.id, limit=1000)
                if r.time_ms >= moved_at_ms and r.key_id is None and r.node == "node-a"
            ]

        wait_until(lambda: len(shipped()) >= 1, 30, "B's usage in the store")
        assert len({r.request_id for r in shipped()}) == len(shipped())
    finally:
        store.close()
    with app(third, group.keys[0]) as c:
        assert ask(c, "and for apps").parse().choices[0].message.content == "You said: and for apps"
