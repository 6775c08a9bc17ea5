"""Usage of the relay's public /v1 while the relay is SIGKILLed and restarted twice: every
request that got a whole answer has exactly one record, with the tokens the app saw.

The relay commits a record before the app can see its answer complete, so the only
records without a seen answer belong to requests cut off between that commit and the
last byte (the tokens were spent; the app saw an error): never more than failed."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from quorum.app import Node
from relay.sqlite_store import SqliteStore
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

MODEL = "Qwen/Qwen3-0.6B"
REQUESTS = 300
CONCURRENCY = 8


@dataclass
class Seen:
    answered: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> tokens
    failed: int = 0


@dataclass
class Setup:
    relay: Relay
    node: Node
    key: str
    data: Path


@pytest.fixture
def setup(bg: LoopThread, tmp_path: Path) -> Iterator[Setup]:
    data = tmp_path / "relay"
    data.mkdir()
    token = create_cluster(data, "home")
    key = json.loads(relay_cli(data, "key", "create", "--cluster", "home", "--json"))["key"]
    relay = Relay(data).start()
    vllm = FakeVLLM(models=[MODEL], chunks=4)
    url = bg.run(vllm.start())
    config = node_config(
        tmp_path / "node",
        node={"name": "home-a"},
        cluster={"token": token},
        relay={"url": relay.url},
        services=[{"name": "vllm", "url": url}],
    )
    node = bg.run(start_node(config))
    try:
        yield Setup(relay, node, key, data)
    finally:
        bg.run(node.stop())
        bg.run(vllm.stop())
        relay.kill()


async def one(http: aiohttp.ClientSession, setup: Setup, i: int, seen: Seen) -> None:
    stream = i % 2 == 1
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": " ".join(["w"] * (i % 9 + 1))}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    try:
        async with http.post(
            setup.relay.http + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {setup.key}"},
        ) as resp:
            raw = await resp.read()  # raises if the body was cut short
            if resp.status != 200:
                seen.failed += 1
                return
            rid = resp.headers["X-Request-Id"]
    except (aiohttp.ClientError, TimeoutError):
        seen.failed += 1
        return
    if stream:
        events = [
            json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")
        ]
        if b"data: [DONE]" not in raw:
            seen.failed += 1
            return
        usage = events[-1]["usage"]
    else:
        usage = json.loads(raw)["usage"]
    seen.answered[rid] = (usage["prompt_tokens"], usage["completion_tokens"])


def test_every_answered_request_has_exactly_one_record(setup: Setup) -> None:
    wait_until(lambda: _ready(setup), 15, "the node's model at the relay")
    seen = Seen()

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout(30))) as http:
            queue = list(range(REQUESTS))
            kills = {REQUESTS // 3, 2 * REQUESTS // 3}
            up = asyncio.Event()
            up.set()

            async def worker() -> None:
                while queue:
                    await up.wait()  # no new requests while the relay is down
                    i = queue.pop(0)
                    if i in kills:  # killed with the other workers' requests in flight
                        up.clear()
                        await asyncio.to_thread(_bounce, setup)
                        up.set()
                    await one(http, setup, i, seen)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    asyncio.run(run())
    assert len(seen.answered) > REQUESTS // 2, seen.failed
    store = SqliteStore(setup.data)
    try:
        cluster = store.cluster("home")
        assert cluster is not None
        records = store.usage_records(cluster.id, limit=10 * REQUESTS)
    finally:
        store.close()
    by_id = {r.request_id: r for r in records}
    assert len(by_id) == len(records)  # one record per request id, by construction
    for rid, tokens in seen.answered.items():
        record = by_id[rid]
        assert (record.status, record.prompt_tokens, record.completion_tokens) == (200, *tokens)
    # A record whose answer the app never saw can exist only for a request that failed
    # at the app (the relay died between committing the record and the last byte).
    extra = [r for r in records if r.status == 200 and r.request_id not in seen.answered]
    assert len(extra) <= seen.failed, (len(seen.answered), seen.failed, len(extra))


def _ready(setup: Setup) -> bool:
    request = urllib.request.Request(
        setup.relay.http + "/v1/models", headers={"Authorization": f"Bearer {setup.key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout(5)) as resp:
            return MODEL in [m["id"] for m in json.load(resp)["data"]]
    except OSError:
        return False


def _bounce(setup: Setup) -> None:
    """SIGKILL the relay mid-traffic, start it again, wait until the node is back on it."""
    assert setup.relay.proc is not None
    setup.relay.proc.send_signal(signal.SIGKILL)
    setup.relay.proc.wait(timeout(10))
    setup.relay.start()
    wait_until(lambda: _ready(setup), 30, "the node back on the restarted relay")
