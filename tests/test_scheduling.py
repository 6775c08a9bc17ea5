"""Scheduling through a real node: failover before the first byte, cooldowns, queues, aliases."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import MakeRig, Rig
from tests.fakes import FakeVLLM
from tests.harness import timeout, wait_for

MODEL = "Qwen/Qwen3-0.6B"


def chat(rig: Rig, text: str, *, stream: bool = False) -> tuple[str, dict[str, str]]:
    client = rig.client()
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        return raw.parse().choices[0].message.content or "", dict(raw.headers)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], stream=True
    ) as resp:
        headers = dict(resp.headers)
        out = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    return out, headers


def node_status(rig: Rig) -> dict[str, Any]:
    with urllib.request.urlopen(rig.node.url + "/quorum/v1/status", timeout=timeout(5)) as r:
        data: dict[str, Any] = json.load(r)
        return data


@pytest.mark.parametrize(
    "mode", ["refused", "error_500", "garbage", "slow_headers", "empty_stream"]
)
def test_failures_before_the_first_byte_go_to_another_holder(make_rig: MakeRig, mode: str) -> None:
    bad = FakeVLLM(delay=5, die_after=0)
    rig = make_rig({"bad": (bad, {"header_timeout_s": 0.5}), "good": (FakeVLLM(), {})})
    if mode == "refused":
        rig.bg.run(bad.stop())  # the engine dies between two refreshes: connections refused
    else:
        bad.mode = "die_midstream" if mode == "empty_stream" else mode  # type: ignore[assignment]
    attempts = []
    for i in range(6):
        text, headers = chat(rig, f"req {i}", stream=i % 2 == 1)
        assert text == f"You said: req {i}"
        attempts.append(int(headers["x-quorum-attempts"]))
    assert 2 in attempts  # the bad holder was tried, and the request still succeeded
    assert max(attempts) <= 2
    # Once it failed, the holder ranks behind the healthy one: later requests go there first.
    assert attempts[-1] == 1


def test_a_failing_holder_cools_down_then_is_probed_once(make_rig: MakeRig) -> None:
    flaky = FakeVLLM()
    rig = make_rig({"flaky": (flaky, {})}, routing={"cooldown_failures": 3, "cooldown_s": 0.5})
    flaky.mode = "error_500"
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as info:
            chat(rig, "x")
        assert info.value.status_code == 502
    (cool,) = node_status(rig)["cooling"]
    assert (cool["service"], cool["state"]) == ("flaky", "open")
    assert cool["until"] > time.time()
    with urllib.request.urlopen(rig.node.url + "/metrics", timeout=timeout(5)) as r:
        metrics = r.read().decode()
    assert (
        'quorum_holder_cooldown_until_seconds{node="node-a",route="local",service="flaky"}'
        in metrics
    )
    # While it cools, nothing is sent to it: a clear 503, fast.
    sent = len(flaky.requests_to("/v1/chat/completions"))
    with pytest.raises(openai.InternalServerError) as info:
        chat(rig, "x")
    assert info.value.status_code == 503
    assert len(flaky.requests_to("/v1/chat/completions")) == sent
    # After the cooldown one probe goes through; it succeeds, and the holder is healthy again.
    flaky.mode = "ok"
    deadline = time.monotonic() + timeout(5)
    while node_status(rig)["cooling"][0]["state"] == "open":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert chat(rig, "probe")[0] == "You said: probe"
    assert node_status(rig)["cooling"] == []


def test_a_failure_after_the_first_byte_is_an_error_never_a_short_answer(make_rig: MakeRig) -> None:
    one, two = FakeVLLM(chunks=8, die_after=3), FakeVLLM(chunks=8, die_after=3)
    rig = make_rig({"one": (one, {}), "two": (two, {})})
    one.mode = two.mode = "die_midstream"
    with pytest.raises(openai.APIError, match="stopped in the middle"):
        chat(rig, "a b c d e f g h", stream=True)
    assert (
        len(one.requests_to("/v1/chat/completions")) + len(two.requests_to("/v1/chat/completions"))
        == 1
    )


def test_200_streams_share_two_equal_holders(make_rig: MakeRig) -> None:
    left, right = FakeVLLM(chunks=4, chunk_delay=0.01), FakeVLLM(chunks=4, chunk_delay=0.01)
    rig = make_rig({"left": (left, {}), "right": (right, {})})

    async def run() -> list[str]:
        async with rig.async_client(timeout=timeout(60)) as client:

            async def one(i: int) -> str:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"s{i}"}], stream=True
                )
                return "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )

            return await asyncio.gather(*(one(i) for i in range(200)))

    assert asyncio.run(run()) == [f"You said: s{i}" for i in range(200)]
    n_left = len(left.requests_to("/v1/chat/completions"))
    n_right = len(right.requests_to("/v1/chat/completions"))
    assert n_left + n_right == 200
    assert 80 <= n_left <= 120, (n_left, n_right)


def test_a_full_queue_answers_503_with_retry_after_before_the_deadline(make_rig: MakeRig) -> None:
    slow = FakeVLLM(chunks=5, chunk_delay=0.4)
    rig = make_rig(
        {"slow": (slow, {"max_concurrency": 1})},
        routing={"queue_size": 2, "queue_timeout_s": 1.0},
    )
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]}

    async def one(client: aiohttp.ClientSession) -> tuple[int, float, str | None]:
        started = time.monotonic()
        async with client.post(rig.base_url + "/chat/completions", json=body) as r:
            await r.read()
            return r.status, time.monotonic() - started, r.headers.get("Retry-After")

    async def run() -> list[tuple[int, float, str | None]]:
        async with aiohttp.ClientSession() as client:
            return await asyncio.gather(*(one(client) for _ in range(8)))

    results = asyncio.run(run())
    statuses = sorted(r[0] for r in results)
    assert statuses.count(200) >= 1
    rejected = [r for r in results if r[0] == 503]
    assert len(rejected) >= 5  # one runs, at most two wait, the rest are refused
    for _, took, retry_after in rejected:
        assert retry_after is not None and int(retry_after) >= 1
        assert took < 1.0 + timeout(1.5)  # nobody waits past the 1 s deadline (plus slack)


def test_aliases_are_listed_and_served(make_rig: MakeRig) -> None:
    vllm = FakeVLLM()
    rig = make_rig({"vllm": (vllm, {})}, aliases={"qwen": MODEL})
    models = {m.id: m for m in rig.client().models.list()}
    assert (models["qwen"].model_extra or {})["quorum"]["alias_of"] == MODEL
    done = rig.client().chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "by alias"}]
    )
    assert done.choices[0].message.content == "You said: by alias"
    (sent,) = vllm.requests_to("/v1/chat/completions")
    assert sent.json()["model"] == MODEL
    assert rig.client().models.retrieve("qwen").id == "qwen"


def test_answers_teach_the_holders_speed_and_tokens_per_second(make_rig: MakeRig) -> None:
    engine = FakeVLLM(chunks=8, chunk_delay=0.02)
    rig = make_rig({"only": (engine, {})})
    sched = rig.node.ctx.scheduler

    def learned() -> tuple[int, float | None]:
        entries = list(sched.health.holders.values())
        return (entries[0].requests - entries[0].in_flight, entries[0].speed.tokens_per_s)

    async def answered(n: int) -> None:
        async def check() -> bool:
            entries = list(sched.health.holders.values())
            return bool(entries) and entries[0].in_flight == 0 and entries[0].requests >= n

        await wait_for(check, 10)

    # A stream without usage (no include_usage): the SDK hangs up at [DONE], before the
    # stream's very end; the whole answer had reached it, so the holder's speed is
    # learned, and its events are counted over the time after the first byte.
    text, _ = chat(rig, "a b c d e f g h", stream=True)
    assert text == "You said: a b c d e f g h"
    rig.bg.run(answered(1))
    (entry,) = sched.health.holders.values()
    assert entry.last_ok is not None and entry.speed.base_s is not None
    streamed = entry.speed.tokens_per_s
    assert streamed is not None and 8 / 0.5 < streamed < 1000, streamed
    assert 1 in entry.speed.firsts  # its time to first byte, per level
    assert [r.status for r in rig.node.ctx.recent] == [200]  # not a 499: it had it all
    # A whole answer says its completion tokens in its usage.
    chat(rig, "again")
    rig.bg.run(answered(2))
    assert learned()[1] != streamed
