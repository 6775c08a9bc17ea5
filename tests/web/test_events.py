"""``/quorum/v1/events``: the pure parts on their own, then the stream from a real node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from quorum.server.events import EVENTS_PATH, REFRESH_S, Sent, due, frame, without_clocks
from tests.conftest import MakeRig
from tests.fakes import FakeOllama
from tests.harness import timeout
from tests.web.csp import PAGE, declared, policy

TOKEN = "events-cluster-token-0123456789"


def test_a_frame_carries_each_line_as_data() -> None:
    assert frame("status", '{"a": 1}') == b'event: status\ndata: {"a": 1}\n\n'
    assert frame("x", "one\ntwo") == b"event: x\ndata: one\ndata: two\n\n"


def test_only_clocks_are_ignored_when_comparing_snapshots() -> None:
    status: dict[str, Any] = {
        "node": {"name": "a", "uptime_s": 1.0},
        "peers": [{"name": "b", "online": True, "last_answer_age_s": 3.0}],
        "cooling": [{"node": "b", "until": 12.5, "state": "open"}],
        "recent": [{"id": "r1"}],
    }
    later = json.loads(json.dumps(status))
    later["node"]["uptime_s"] = 9.0
    later["peers"][0]["last_answer_age_s"] = 11.0
    later["cooling"][0]["until"] = 12.6
    assert without_clocks(later) == without_clocks(status)
    later["recent"].append({"id": "r2"})
    assert without_clocks(later) != without_clocks(status)
    later = json.loads(json.dumps(status))
    later["peers"][0]["online"] = False
    assert without_clocks(later) != without_clocks(status)


def test_a_snapshot_is_due_first_on_change_and_on_refresh() -> None:
    assert due(None, "k", 0.0)
    sent = Sent("k", 10.0)
    assert not due(sent, "k", 10.0 + REFRESH_S - 0.01)
    assert due(sent, "other", 10.01)
    assert due(sent, "k", 10.0 + REFRESH_S)


def test_the_page_policy_matches_its_inline_code() -> None:
    html = PAGE.read_text()
    assert declared(html) == policy(html), (
        "the page's Content-Security-Policy does not match its <script>/<style>: "
        "run 'python -m tests.web.csp' to update it"
    )


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, until it ends."""
    name, data = "message", []
    while line := await resp.content.readline():
        text = line.decode().rstrip("\n")
        if text.startswith("event:"):
            name = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].removeprefix(" "))
        elif not text and data:
            yield name, "\n".join(data)
            name, data = "message", []


async def next_status(stream: AsyncIterator[tuple[str, str]], seconds: float) -> Any:
    async with asyncio.timeout(timeout(seconds)):
        async for name, data in stream:
            if name == "status":
                return json.loads(data)
    raise AssertionError("the event stream ended")


def test_a_finished_request_is_pushed_at_once(make_rig: MakeRig) -> None:
    rig = make_rig({"ollama": (FakeOllama(models=["qwen3:0.6b"]), {"engine": "ollama"})})

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.get(rig.node.url + EVENTS_PATH) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            stream = events(resp)
            first = await next_status(stream, 5)
            assert first["node"]["name"] == "node-a"
            assert [m["id"] for m in first["models"]] == ["qwen3:0.6b"]
            assert first["recent"] == []
            async with rig.async_client() as client:
                await client.chat.completions.create(
                    model="qwen3:0.6b", messages=[{"role": "user", "content": "hi"}]
                )
            # Well before the periodic refresh: the change itself sends the snapshot.
            async with asyncio.timeout(timeout(min(2.0, REFRESH_S / 2))):
                while not (status := await next_status(stream, 5))["recent"]:
                    pass
            (record,) = status["recent"]
            assert (record["model"], record["route"], record["status"]) == (
                "qwen3:0.6b",
                "local",
                200,
            )

    rig.bg.run(scenario())


def test_an_open_page_does_not_hold_up_the_node_stop(make_rig: MakeRig) -> None:
    rig = make_rig()

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with (
            aiohttp.ClientSession() as http,
            http.get(rig.node.url + EVENTS_PATH) as resp,
        ):
            stream = events(resp)
            await next_status(stream, 5)
            started = loop.time()
            await rig.node.stop()
            async with asyncio.timeout(timeout(5)):
                async for _ in stream:
                    pass  # the stream ends rather than hanging
            return loop.time() - started

    assert rig.bg.run(scenario()) < timeout(3)


def test_other_machines_need_the_cluster_token_for_the_page_and_its_events(
    make_rig: MakeRig,
) -> None:
    # Loopback stands in for the LAN once it is not trusted.
    rig = make_rig(node={"name": "node-a", "loopback_trusted": False}, cluster={"token": TOKEN})

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            for path in ("/", EVENTS_PATH):
                async with http.get(rig.node.url + path) as resp:
                    assert resp.status == 401, path
                async with http.get(
                    rig.node.url + path, headers={"Authorization": "Bearer wrong-token"}
                ) as resp:
                    assert resp.status == 401, path
            async with http.get(
                rig.node.url + EVENTS_PATH, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200
                assert (await next_status(events(resp), 5))["node"]["name"] == "node-a"

    rig.bg.run(scenario())
