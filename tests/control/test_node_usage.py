"""Usage at nodes: every request a client made at a node reaches the relay's store once."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai

from quorum.app import Node
from quorum.protocol import RequestUsage
from relay.sqlite_store import SqliteStore
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster


@contextlib.contextmanager
def node_behind_relay(bg: LoopThread, tmp_path: Path, data_dir: Path) -> Iterator[Node]:
    """A relay process, an engine and a node (data in ``data_dir``) that ships usage to it."""
    (tmp_path / "relay").mkdir()
    token = create_cluster(tmp_path / "relay", "home")
    relay = Relay(tmp_path / "relay").start()
    engine = FakeVLLM(chunks=3)
    url = bg.run(engine.start())
    config = node_config(
        data_dir,
        cluster={"token": token},
        relay={"url": relay.url},
        discovery={"enabled": False},
        services=[{"name": "vllm", "url": url}],
    )
    node = bg.run(start_node(config))
    try:
        yield node
    finally:
        bg.run(node.stop())
        bg.run(engine.stop())
        relay.stop()


def stored_usage(tmp_path: Path) -> list[RequestUsage]:
    """The usage records the relay's store holds, once the relay has stopped."""
    store = SqliteStore(tmp_path / "relay")
    try:
        (cluster,) = store.clusters()
        return store.usage_records(cluster.id, limit=100)
    finally:
        store.close()


def test_usage_of_node_requests_reaches_the_relay_once(bg: LoopThread, tmp_path: Path) -> None:
    with node_behind_relay(bg, tmp_path, tmp_path / "a") as node:
        seen = 0
        with openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0) as client:
            for i in range(4):
                done = client.chat.completions.create(
                    model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": f"one two {i}"}]
                )
                assert done.usage is not None
                seen += done.usage.completion_tokens
            stream = client.chat.completions.create(
                model="Qwen/Qwen3-0.6B",
                messages=[{"role": "user", "content": "a b c"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            with stream:
                for chunk in stream:
                    if chunk.usage:
                        seen += chunk.usage.completion_tokens
        assert node.ctx.outbox is not None
        deadline = time.monotonic() + timeout(15)
        while node.ctx.outbox.pending():
            assert time.monotonic() < deadline, "the outbox never emptied"
            time.sleep(0.05)
    records = stored_usage(tmp_path)
    assert len(records) == 5
    assert len({r.request_id for r in records}) == 5
    assert sum(r.completion_tokens or 0 for r in records) == seen
    assert {(r.route, r.node, r.status) for r in records} == {("local", "node-a", 200)}
    assert json.dumps([r.model for r in records]).count("Qwen/Qwen3-0.6B") == 5


def test_a_client_saying_hop_is_still_counted(bg: LoopThread, tmp_path: Path) -> None:
    """Only a peer node's hop is one: any other client claiming it is counted anyway."""
    with node_behind_relay(bg, tmp_path, tmp_path / "a") as node:
        with openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0) as client:
            client.chat.completions.create(
                model="Qwen/Qwen3-0.6B",
                messages=[{"role": "user", "content": "free ride?"}],
                extra_headers={"X-Quorum-Hop": "1"},
            )
        assert node.ctx.outbox is not None
        deadline = time.monotonic() + timeout(15)
        while node.ctx.outbox.pending() or not node.ctx.outbox.shipped:
            assert time.monotonic() < deadline, "the request was never recorded"
            time.sleep(0.05)
    assert len(stored_usage(tmp_path)) == 1
