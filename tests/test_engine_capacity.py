"""What engines publish about their capacity and load: llama.cpp's total slots become the
service's; vLLM's and llama.cpp's ``/metrics`` gauges become its reported load."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from quorum.config import EngineKind, ServiceConfig
from quorum.config.models import AutodetectSection
from quorum.engines.base import make_http_get
from quorum.engines.capacity import (
    EngineLoad,
    llamacpp_load,
    prometheus_samples,
    read_load,
    read_slots,
    slots_of_props,
    vllm_load,
)
from quorum.engines.manager import EngineManager
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


# vLLM 0.10's /metrics (V1 engine), trimmed: the gauges read, a longer name sharing a
# prefix, a histogram, and the process metrics around them.
VLLM_V1 = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12085.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 1.0
# HELP vllm:num_requests_waiting_by_reason Number of requests waiting, by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="Qwen/Qwen3-8B",reason="capacity"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.42
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="Qwen/Qwen3-8B"} 1.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen3-8B"} 5.0
"""
# Data parallel: one series per engine.
VLLM_DP = """\
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.97
"""
# vLLM 0.6 (V0): no engine label, the GPU cache under its old name, swapped requests.
VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="/models/llama-2-7b"} 0.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="/models/llama-2-7b"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="/models/llama-2-7b"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="/models/llama-2-7b"} 0.96
"""
LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1234
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
"""


def test_vllm_metrics_give_its_load() -> None:
    assert vllm_load(VLLM_V1) == EngineLoad(3, 1, 0.42)
    # Summed over data-parallel engines; the fullest KV cache counts (one more must wait).
    dp = vllm_load(VLLM_DP)
    assert dp == EngineLoad(5, 4, 0.97) and dp.queued == 4
    old = vllm_load(VLLM_V0)
    assert old == EngineLoad(0, 0, 0.96) and old.queued == 1  # full cache: the next waits
    assert vllm_load(LLAMACPP) is None
    assert llamacpp_load(LLAMACPP) == EngineLoad(1, 2)
    assert llamacpp_load(VLLM_V1) is None


@pytest.mark.parametrize(
    "page",
    [
        "",
        "not prometheus at all",
        "vllm:num_requests_running 3\n",  # waiting missing
        "vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\n",
        "vllm:num_requests_running -1\nvllm:num_requests_waiting 0\n",
        'vllm:num_requests_running{engine="0" 2\nvllm:num_requests_waiting 0\n',
        "vllm:num_requests_running 1e12\nvllm:num_requests_waiting 0\n",
    ],
)
def test_a_page_without_sane_numbers_gives_no_load(page: str) -> None:
    assert vllm_load(page) is None


def test_samples_keep_timestamps_and_labels_with_spaces_apart() -> None:
    text = 'vllm:num_requests_running{model_name="my model",engine="0"} 2 1700000000000\n'
    assert prometheus_samples(text, frozenset({"vllm:num_requests_running"})) == {
        "vllm:num_requests_running": [2.0]
    }


async def test_the_fakes_publish_their_load_as_the_engines_do() -> None:
    vllm = FakeVLLM(max_num_seqs=1, chunks=4, chunk_delay=0.5)
    llama, quiet = FakeLlamaCpp(total_slots=1, metrics=True), FakeLlamaCpp()
    vllm_url, llama_url, quiet_url = await vllm.start(), await llama.start(), await quiet.start()
    body = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as session:
            get = make_http_get(session)
            assert await read_load(get, vllm_url, {}, EngineKind.VLLM) == EngineLoad(0, 0, 0.0)
            # Two streams on one sequence slot: one runs, one waits in vLLM's queue.
            posts = [
                asyncio.ensure_future(
                    session.post(f"{vllm_url}/v1/chat/completions", json={**body, "stream": True})
                )
                for _ in range(2)
            ]
            await asyncio.to_thread(
                vllm.wait_until, lambda: vllm.slot_pools()[0].waiting == 1, 10.0
            )
            load = await read_load(get, vllm_url, {}, EngineKind.VLLM)
            assert load is not None and (load.running, load.waiting) == (1, 1)
            for post in posts:
                (await post).close()
            assert await read_load(get, llama_url, {}, EngineKind.LLAMACPP) == EngineLoad(0, 0)
            # llama-server without --metrics answers 501: nothing is known.
            assert await read_load(get, quiet_url, {}, EngineKind.LLAMACPP) is None
            # Engines that publish no load are not asked.
            assert await read_load(get, vllm_url, {}, EngineKind.OPENAI) is None
    finally:
        for fake in (vllm, llama, quiet):
            await fake.stop()


async def test_the_manager_hands_on_the_load_an_idle_service_publishes() -> None:
    vllm = FakeVLLM()
    url = await vllm.start()
    seen: list[tuple[str, EngineLoad]] = []
    try:
        async with aiohttp.ClientSession() as session:
            services = (ServiceConfig(name="big", url=url + "/v1", engine=EngineKind.VLLM),)
            manager = EngineManager(
                services,
                AutodetectSection(enabled=False),
                make_http_get(session),
                lambda states: None,
                on_load=lambda name, load: seen.append((name, load)),
            )
            await manager.refresh()
            assert seen == [("big", EngineLoad(0, 0, 0.0))]
            # While this node runs requests there, the service is not asked at all.
            manager._gate = Busy()
            await manager.refresh()
    finally:
        await vllm.stop()
    assert seen == [("big", EngineLoad(0, 0, 0.0))]
    assert len(vllm.requests_to("/metrics")) == 1


class Busy:
    def reserve(self, service: str) -> bool:
        return False

    def release(self, service: str) -> None:
        raise AssertionError("nothing was reserved")
