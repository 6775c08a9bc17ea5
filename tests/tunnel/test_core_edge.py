"""A stream the relay opens enters the serving node's proxy core directly (no loopback HTTP).

Node A asks node B through an in-memory relay; B's ``serve_stream`` is the
core's tunnel edge over an in-memory engine. Its fallback (the loopback HTTP
forwarder) must never be called for a proxied endpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from quorum.api.headers import KEY_MODELS_HEADER
from quorum.link import TunnelStream
from quorum.protocol import ModelInfo, RequestHead
from quorum.server.tunnel_edge import CoreStreamHandler, key_of
from tests.proxy.test_core import ANSWER, Context, MemoryUpstream, chunk, context, holder, sse
from tests.tunnel.helpers import MemoryRelay, Node, running

MODELS = (ModelInfo("m", "llm"),)
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class EdgeContext(Context):
    sharing_paused: bool = False
    max_body_bytes: int = 1 << 20


async def no_loopback(head: RequestHead, stream: TunnelStream) -> None:
    raise AssertionError(f"{head.path} went to the loopback forwarder")


def edge(script: object) -> EdgeContext:
    base = context(script, holder("engine"))  # type: ignore[arg-type]
    return EdgeContext(base.snapshot, base.opener)


async def ask(node: Node, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    response = await node.client.request("node-b", "POST", "/v1/chat/completions", headers, body, 5)
    try:
        return response.status, b"".join([c async for c in response.chunks()])
    finally:
        response.release()


async def test_a_relayed_request_is_served_by_the_core() -> None:
    ctx = edge(lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]))
    relay = MemoryRelay()
    a = Node(relay, "node-a")
    b = Node(relay, "node-b", serve=CoreStreamHandler(ctx, no_loopback), models=MODELS)
    async with running(a, b):
        await a.until_knows("node-b")
        status, body = await ask(a, CHAT, [("Content-Type", "application/json")])
        assert status == 200 and body == ANSWER
        streamed = sse(chunk("Hel"), chunk("lo"), chunk(None, "stop"))
        ctx.opener.script = lambda h, b: MemoryUpstream(200, "text/event-stream", streamed)
        status, body = await ask(a, CHAT, [("Content-Type", "application/json")])
        assert status == 200 and body == b"".join(streamed)
    await relay.close()
    assert [c[0] for c in ctx.opener.calls] == ["engine", "engine"]
    assert all(r.route == "local" for r in ctx.recent)  # served here, as a forwarded request


async def test_errors_go_back_in_the_callers_shape_and_key_limits_apply() -> None:
    ctx = edge(lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]))
    relay = MemoryRelay()
    a = Node(relay, "node-a")
    b = Node(relay, "node-b", serve=CoreStreamHandler(ctx, no_loopback), models=MODELS)
    async with running(a, b):
        await a.until_knows("node-b")
        status, body = await ask(a, b"{not json", [("Content-Type", "application/json")])
        assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
        limited = [("Content-Type", "application/json"), (KEY_MODELS_HEADER, "other")]
        status, body = await ask(a, CHAT, limited)
        assert status == 403 and json.loads(body)["error"]["code"] == "model_not_allowed"
        ctx.sharing_paused = True
        status, body = await ask(a, CHAT, [("Content-Type", "application/json")])
        assert status == 403 and json.loads(body)["error"]["code"] == "sharing_paused"
    await relay.close()
    assert ctx.opener.calls == []


def test_the_relays_key_header() -> None:
    assert key_of(RequestHead("POST", "/v1/x", ())) is None
    key = key_of(RequestHead("POST", "/v1/x", ((KEY_MODELS_HEADER, "a,b"),)))
    assert key is not None and key.models == ("a", "b")
    unlimited = key_of(RequestHead("POST", "/v1/x", ((KEY_MODELS_HEADER, "*"),)))
    assert unlimited is not None and unlimited.models is None
