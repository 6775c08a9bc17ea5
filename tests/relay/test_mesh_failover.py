"""A relay killed: an app's request that another relay routes to a node the dead relay held
fails over to another holder at once (a probe: NATS answers that nobody listens for the
dead relay), instead of waiting until the dead relay has been silent long enough to
expire (6 s) and then failing. Three real relay processes, PostgreSQL and NATS, as in
``test_mesh_relays``; node A knows relay 1 only, so it cannot move."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import openai

from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.postgres import fresh_schema
from tests.relay.harness import Relay, relay_cli
from tests.relay.test_mesh_relays import MODEL, NATS, _value, app, ask
from tests.relay.test_relay_e2e import wait_until

SLOW = "slow-model"
FAIL_OVER_WITHIN_S = 3.0  # a dead relay expires after 6 s; a probe takes a fraction of one


def _holders(client: openai.OpenAI, model: str) -> list[str]:
    for m in client.models.list().data:
        if m.id == model:
            extra: dict[str, Any] = getattr(m, "quorum", None) or {}
            return list(extra.get("holders", []))
    return []


def test_a_request_for_a_node_of_a_killed_relay_fails_over_at_once(
    bg: LoopThread, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    fast = FakeVLLM(chunks=3, chunk_delay=0.01)
    slow = FakeVLLM(models=[SLOW], chunks=600, chunk_delay=0.05)  # a 30 s answer
    fast_url, slow_url = bg.run(fast.start()), bg.run(slow.start())
    nodes = []
    relays: list[Relay] = []
    try:
        with fresh_schema() as store:
            shared = ("--store", store, "--nats", NATS, "--nats-prefix", prefix)
            data = [tmp_path / f"relay{n}" for n in (1, 2, 3)]
            for d in data:
                d.mkdir()
            out = relay_cli(data[0], "cluster", "create", "home", "--store", store)
            token = _value(out, "token")
            out = relay_cli(data[0], "key", "create", "--cluster", "home", "--store", store)
            key = _value(out, "key")
            relays = [Relay(d, None, *shared).start() for d in data]
            for name, relay, services in (
                ("node-a", relays[0], [{"name": "vllm", "url": fast_url}]),
                (
                    "node-c",
                    relays[1],
                    [{"name": "vllm", "url": fast_url}, {"name": "slow", "url": slow_url}],
                ),
            ):
                config = node_config(
                    tmp_path / name,
                    node={"name": name},
                    cluster={"token": token},
                    relay={"url": relay.url},  # that relay only: A cannot move
                    services=services,
                )
                nodes.append(bg.run(start_node(config)))
            with app(relays[2], key) as client:
                wait_until(
                    lambda: (
                        sorted(_holders(client, MODEL)) == ["node-a", "node-c"]
                        and _holders(client, SLOW) == ["node-c"]
                    ),
                    20,
                    "both holders at relay 3",
                )
                # A long answer from C keeps relay 3's connection to relay 2 busy, so
                # relay 3 tries A first for MODEL (the least busy first).
                held = bg.run(_hold(relays[2], key))
                try:
                    relays[0].kill()
                    killed = time.monotonic()
                    raw = ask(client, "after relay 1 died")
                    took = time.monotonic() - killed
                    assert raw.parse().choices[0].message.content == "You said: after relay 1 died"
                    assert raw.headers["x-quorum-node"] == "node-c"
                    assert took < timeout(FAIL_OVER_WITHIN_S), took
                    # Relay 1's node is forgotten: the next request goes to C directly.
                    assert ask(client, "again").headers["x-quorum-node"] == "node-c"
                    assert _holders(client, MODEL) == ["node-c"]
                finally:
                    bg.run(_release(*held))
            log = relays[2].log.read_text()
            assert "no longer listens on the mesh" in log
    finally:
        for node in nodes:
            bg.run(node.stop())
        for relay in relays:
            relay.kill()
        bg.run(fast.stop())
        bg.run(slow.stop())


async def _hold(relay: Relay, key: str) -> tuple[openai.AsyncOpenAI, Any]:
    """A streamed answer from the slow model, started and left open."""
    client = openai.AsyncOpenAI(
        base_url=relay.http + "/v1", api_key=key, max_retries=0, timeout=timeout(60)
    )
    stream = await client.chat.completions.create(
        model=SLOW, messages=[{"role": "user", "content": "a long answer"}], stream=True
    )
    await stream.__anext__()
    return client, stream


async def _release(client: openai.AsyncOpenAI, stream: Any) -> None:
    await stream.close()
    await client.close()
