"""A frozen LAN peer fails a request in seconds: before its head, and in the middle of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import pytest

from quorum.config.models import EngineKind, ServiceType
from quorum.errors import EngineUnreachable, UpstreamFailed
from quorum.fleet import Holder, Route
from quorum.server.liveness import watched

PEER = Holder(
    model="m",
    type=ServiceType.LLM,
    node_id="b",
    node_name="node-b",
    route=Route.LAN,
    service="s",
    engine=EngineKind.OPENAI,
    url="https://10.0.0.2:32768",
    upstream_model="m",
)


class Stalling:
    """An answer whose body stops after ``parts`` chunks (a peer stopped mid-answer)."""

    status: int = 200
    content_length: int | None = None

    def __init__(self, parts: int) -> None:
        self.parts = parts
        self.released = False

    @property
    def headers(self) -> Mapping[str, str]:
        return {"Content-Type": "text/event-stream"}

    async def chunks(self) -> AsyncIterator[bytes]:
        for _ in range(self.parts):
            yield b"data: x\n\n"
        await asyncio.Event().wait()  # silent for ever
        yield b""

    async def read(self, limit: int) -> bytes:
        return b""

    def release(self) -> None:
        self.released = True


async def never() -> Stalling:
    await asyncio.Event().wait()
    raise AssertionError


async def test_a_frozen_peer_fails_before_its_head() -> None:
    probes = 0

    async def frozen() -> bool:
        nonlocal probes
        probes += 1
        return False

    started = time.monotonic()
    with pytest.raises(EngineUnreachable):
        await watched(never(), PEER, frozen, 0.05)
    assert probes == 1 and time.monotonic() - started < 1


async def test_a_slow_peer_that_answers_its_health_is_waited_for() -> None:
    async def slow() -> Stalling:
        await asyncio.sleep(0.3)
        return Stalling(2)

    async def alive() -> bool:
        return True

    upstream = await watched(slow(), PEER, alive, 0.05)
    assert upstream.status == 200


async def test_a_peer_frozen_mid_answer_cuts_it_visibly() -> None:
    answers = iter([True, True, False])

    async def probe() -> bool:
        return next(answers)

    async def opened() -> Stalling:
        return Stalling(3)

    upstream = await watched(opened(), PEER, probe, 0.05)
    got = []
    with pytest.raises(UpstreamFailed) as cut:
        async for chunk in upstream.chunks():
            got.append(chunk)
    assert len(got) == 3 and "incomplete" in cut.value.message
