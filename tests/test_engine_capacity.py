"""What engines publish about their capacity: llama.cpp's total slots become the service's."""

from __future__ import annotations

import aiohttp
import pytest

from quorum.config import EngineKind
from quorum.engines.base import make_http_get
from quorum.engines.capacity import read_slots, slots_of_props
from tests.fakes import FakeLlamaCpp, FakeVLLM


@pytest.mark.parametrize(
    ("props", "slots"),
    [
        ({"total_slots": 3}, 3),
        ({"total_slots": 0}, None),
        ({"total_slots": True}, None),
        ({"total_slots": "4"}, None),
        ({"total_slots": 10**9}, None),
        ({}, None),
        ([], None),
        (None, None),
    ],
)
def test_total_slots_is_read_only_when_sane(props: object, slots: int | None) -> None:
    assert slots_of_props(props) == slots


async def test_llamacpp_publishes_its_slots_and_vllm_does_not() -> None:
    llama, vllm = FakeLlamaCpp(total_slots=3), FakeVLLM()
    llama_url, vllm_url = await llama.start(), await vllm.start()
    try:
        async with aiohttp.ClientSession() as session:
            get = make_http_get(session)
            assert await read_slots(get, llama_url, {}, EngineKind.LLAMACPP) == 3
            assert await read_slots(get, vllm_url, {}, EngineKind.VLLM) is None
            # An engine that is not llama.cpp is not asked (its /props may mean anything).
            assert await read_slots(get, llama_url, {}, EngineKind.OPENAI) is None
    finally:
        await llama.stop()
        await vllm.stop()
