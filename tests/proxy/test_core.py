"""The proxy core against in-memory upstreams and a sink: no sockets, no aiohttp server.

Each test scripts what the holders answer (an ``Opener`` that returns
``MemoryUpstream``s or raises from the error tree) and reads what the core
wrote to a ``MemorySink``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import pytest

from quorum.config.models import EngineKind, RoutingSection, ServiceType
from quorum.errors import (
    EngineUnreachable,
    Forbidden,
    ModelNotFound,
    NoReachableHolder,
    UpstreamFailed,
)
from quorum.fleet import FleetSnapshot, Holder, Route
from quorum.fleet.recent import RecentModels
from quorum.keys import KeyInfo
from quorum.proxy import Exchange, ProxyRequest, RequestRecord, new_exchange, serve
from quorum.proxy.upstream import Headers, Upstream
from quorum.routing import ENDPOINTS
from quorum.server.metrics import Metrics
from quorum.server.scheduler import Scheduler
from quorum.usage.outbox import Outbox

CHAT = ENDPOINTS["/v1/chat/completions"]


def holder(service: str, route: Route = Route.LOCAL, node: str = "here") -> Holder:
    return Holder(
        model="m",
        type=ServiceType.LLM,
        node_id=node,
        node_name=node,
        route=route,
        service=service,
        engine=EngineKind.OPENAI,
        url=f"http://{service}",
        upstream_model="m",
    )


class MemoryUpstream:
    def __init__(self, status: int, ctype: str, parts: list[bytes], fail_after: int | None = None):
        self.status = status
        self.content_length: int | None = None
        self.headers: Mapping[str, str] = {"Content-Type": ctype}
        self._parts = parts
        self._fail_after = fail_after
        self.released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for index, part in enumerate(self._parts):
            if index == self._fail_after:
                raise UpstreamFailed("the engine went away")
            yield part

    async def read(self, limit: int) -> bytes:
        return b"".join(self._parts)

    def release(self) -> None:
        self.released = True


Script = Callable[[Holder, bytes], Upstream]


@dataclass
class Opener:
    script: Script
    calls: list[tuple[str, Headers, bytes]] = field(default_factory=list)

    async def __call__(
        self, holder: Holder, method: str, path_qs: str, headers: Headers, body: bytes
    ) -> Upstream:
        self.calls.append((holder.service, headers, body))
        return self.script(holder, body)


@dataclass
class Context:
    snapshot: FleetSnapshot
    opener: Opener
    scheduler: Scheduler = field(default_factory=lambda: Scheduler(RoutingSection(), {}))
    metrics: Metrics = field(default_factory=Metrics)
    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=10))
    outbox: Outbox | None = None
    recent_models: RecentModels = field(default_factory=RecentModels)

    @property
    def name(self) -> str:
        return "here"


@dataclass
class MemorySink:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    aborted: bool = False

    @property
    def started(self) -> bool:
        return self.status != 0

    async def start(
        self, status: int, headers: Mapping[str, str], content_length: int | None = None
    ) -> None:
        assert not self.started
        self.status, self.headers = status, dict(headers)

    async def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        await self.start(status, headers, len(body))
        self.body += body
        self.ended = True

    async def write(self, data: bytes) -> None:
        assert self.started and not self.ended
        self.body += data

    async def end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.aborted = True


def context(script: Script, *holders: Holder) -> Context:
    return Context(FleetSnapshot("here", "here", holders), Opener(script))


def chat_request(**over: object) -> ProxyRequest:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    fields: dict[str, object] = {
        "endpoint": CHAT,
        "method": "POST",
        "path_qs": "/v1/chat/completions",
        "headers": (("Content-Type", "application/json"), ("Authorization", "Bearer x")),
        "body": body,
    }
    fields.update(over)
    return ProxyRequest(**fields)  # type: ignore[arg-type]


async def run(ctx: Context, request: ProxyRequest) -> tuple[MemorySink, Exchange]:
    sink = MemorySink()
    ex = new_exchange(request)
    await serve(ctx, request, sink, ex)
    return sink, ex


ANSWER = json.dumps(
    {"choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}]}
).encode()


def sse(*events: object) -> list[bytes]:
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def test_a_json_answer_is_written_whole_with_the_routing_headers() -> None:
    ctx = context(lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]), holder("a"))
    sink, ex = await run(ctx, chat_request())
    assert (sink.status, bytes(sink.body), sink.ended) == (200, ANSWER, True)
    assert sink.headers["X-Quorum-Route"] == "local"
    assert sink.headers["X-Quorum-Node"] == "here"
    ((_, headers, _),) = ctx.opener.calls
    names = {k.lower() for k, _ in headers}
    assert "authorization" not in names  # the client's credential never reaches an engine
    assert ex.status == 200 and ctx.recent[-1].status == 200


async def test_a_refused_holder_fails_over_before_anything_was_written() -> None:
    def script(h: Holder, body: bytes) -> Upstream:
        if h.service == "a":
            raise EngineUnreachable("refused")
        return MemoryUpstream(200, "application/json", [ANSWER])

    ctx = context(script, holder("a"), holder("b"))
    sink, ex = await run(ctx, chat_request())
    assert sink.status == 200 and ex.attempts == 2
    assert [c[0] for c in ctx.opener.calls] == ["a", "b"]


async def test_a_stream_passes_through_and_a_cut_one_is_aborted() -> None:
    whole = sse(chunk("Hel"), chunk("lo"), chunk(None, "stop"))
    ctx = context(lambda h, b: MemoryUpstream(200, "text/event-stream", whole), holder("a"))
    sink, _ = await run(ctx, chat_request())
    assert bytes(sink.body) == b"".join(whole) and sink.ended and not sink.aborted

    cut = sse(chunk("Hel"), chunk("lo"))  # [DONE] with no finish_reason
    ctx = context(lambda h, b: MemoryUpstream(200, "text/event-stream", cut), holder("a"))
    sink, ex = await run(ctx, chat_request())
    assert sink.aborted and not sink.ended
    assert b"[DONE]" not in sink.body
    assert b'"code": "answer_cut"' in sink.body
    assert ex.error == "answer_cut"


async def test_a_stream_that_breaks_mid_answer_is_never_retried() -> None:
    parts = sse(chunk("Hel"), chunk("lo"), chunk(None, "stop"))
    ctx = context(
        lambda h, b: MemoryUpstream(200, "text/event-stream", parts, fail_after=1),
        holder("a"),
        holder("b"),
    )
    sink, ex = await run(ctx, chat_request())
    assert sink.aborted and ex.attempts == 1
    assert ex.error == "engine_stream_broken"


async def test_a_whole_answer_without_finish_reason_is_an_error() -> None:
    unfinished = json.dumps({"choices": [{"message": {"content": "hel"}}]}).encode()
    ctx = context(lambda h, b: MemoryUpstream(200, "application/json", [unfinished]), holder("a"))
    with pytest.raises(UpstreamFailed) as failed:
        await run(ctx, chat_request())
    assert failed.value.code == "answer_cut"


async def test_a_forwarded_request_is_served_only_by_local_holders() -> None:
    ctx = context(
        lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]),
        holder("peer", Route.LAN, node="other"),
    )
    with pytest.raises(ModelNotFound):
        await run(ctx, chat_request(forwarded=True))
    assert ctx.opener.calls == []


async def test_a_keys_model_limits_apply_where_the_request_is_routed() -> None:
    ctx = context(lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]), holder("a"))
    key = KeyInfo("k1", "app", "qk_x", ("other",), None)
    with pytest.raises(Forbidden):
        await run(ctx, chat_request(key=key))
    assert ctx.opener.calls == []
    allowed = KeyInfo("k2", "app", "qk_y", ("m",), None)
    sink, ex = await run(ctx, chat_request(key=allowed))
    assert sink.status == 200 and ex.key_id == "k2"


async def test_a_model_whose_holders_just_left_is_unreachable_not_unknown() -> None:
    ctx = context(lambda h, b: MemoryUpstream(200, "application/json", [ANSWER]))
    with pytest.raises(ModelNotFound):
        await run(ctx, chat_request())  # never seen: unknown
    ctx.recent_models.saw(["m"], time.monotonic() - 30)  # held 30 s ago
    with pytest.raises(NoReachableHolder) as gone:
        await run(ctx, chat_request())
    assert gone.value.status == 503 and gone.value.headers()["Retry-After"] == "10"
    assert "30 s ago" in gone.value.message
    ctx.recent_models.saw(["m"], time.monotonic() - 3600)  # too long ago: unknown again
    with pytest.raises(ModelNotFound):
        await run(ctx, chat_request())
