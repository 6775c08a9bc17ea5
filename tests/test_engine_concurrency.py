"""The node against engines that queue, serialise and interrupt, as real ones do.

The fakes keep the real engines' concurrency (tests/fakes): llama-cpp-python's
server takes one request at a time behind a lock that its ``/v1/models`` takes
too, and ends a running stream with a bare ``[DONE]`` when another request
waits; LM Studio answers one at a time. The node probes its services every
half second here, as a stress on "probing never disturbs an engine".
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai._legacy_response import LegacyAPIResponse
from openai.types.chat import ChatCompletion

from tests.conftest import MakeRig, Rig
from tests.fakes import FakeLlamaCppPython, FakeLMStudio
from tests.harness import timeout

MODEL = "gemma-3-270m"
FAST_PROBES = {"enabled": False, "interval_s": 0.5}


def _llamacpp_python(**kw: Any) -> FakeLlamaCppPython:
    return FakeLlamaCppPython(alias=MODEL, chunks=40, chunk_delay=0.05, **kw)


def _ask(client: openai.OpenAI, model: str, text: str) -> ChatCompletion:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def _ask_raw(client: openai.OpenAI, model: str, text: str) -> LegacyAPIResponse[ChatCompletion]:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


def _stream(rig: Rig, started: threading.Event) -> tuple[str | None, str]:
    finish, text = None, ""
    with rig.client() as client:
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "tell me a long story"}], stream=True
        ):
            for choice in chunk.choices:
                if choice.delta.content:
                    text += choice.delta.content
                    started.set()
                finish = choice.finish_reason or finish
    return finish, text


def test_llamacpp_python_is_recognised_and_never_interrupted(make_rig: MakeRig) -> None:
    rig = make_rig({"lcp": (_llamacpp_python(), {})}, autodetect=FAST_PROBES)
    (service,) = rig.node.ctx.services
    assert service.engine.value == "llama-cpp-python"
    fake = rig.fakes["lcp"]
    started = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(_stream, rig, started)
        assert started.wait(timeout(10))
        with rig.client() as client:
            second = pool.submit(_ask, client, MODEL, "hi")
            finish, text = streaming.result(timeout(30))
            answer = second.result(timeout(30))
    assert finish == "stop", text
    assert text == "You said: tell me a long story"
    assert answer.choices[0].message.content == "You said: hi"
    assert fake.streams_cut_short == 0


def test_a_cut_stream_is_never_passed_off_as_complete(make_rig: MakeRig) -> None:
    """Told (wrongly) that the engine takes two at once, the node sends a second request
    mid-stream; the engine cuts the stream with a bare [DONE]. The client must see an
    error, not a clean end, and the node counts it."""
    rig = make_rig(
        {"lcp": (_llamacpp_python(), {"engine": "llama-cpp-python", "max_concurrency": 2})}
    )
    fake = rig.fakes["lcp"]
    started = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(_stream, rig, started)
        assert started.wait(timeout(10))
        with rig.client() as client:
            second = pool.submit(_ask, client, MODEL, "hi")
            with pytest.raises(openai.APIError) as cut:
                streaming.result(timeout(30))
            second.result(timeout(30))
    assert "without a finish_reason" in str(cut.value)
    assert fake.streams_cut_short == 1
    metrics = httpx.get(rig.node.url + "/metrics", timeout=5).text
    assert 'code="answer_cut"' in metrics
    (record,) = [r for r in rig.node.ctx.recent if r.error == "answer_cut"]
    assert record.status == 200  # the head had gone out; the answer was cut after it


def test_a_busy_engine_is_not_probed_and_not_marked_down(make_rig: MakeRig) -> None:
    """Its /v1/models waits behind a 4 s answer: a probe would time out after 3 s."""
    fake = _llamacpp_python(gen_delay=4.0)
    rig = make_rig({"lcp": (fake, {})}, autodetect=FAST_PROBES)
    with rig.client() as client, ThreadPoolExecutor(2) as pool:
        began = time.time()
        first = pool.submit(_ask_raw, client, MODEL, "slow")
        fake.wait_until(lambda: fake.processing == 1, timeout(10))
        second = pool.submit(_ask_raw, client, MODEL, "queued")
        answers = [first.result(timeout(30)), second.result(timeout(30))]
        ended = time.time()
    assert [a.http_response.status_code for a in answers] == [200, 200]
    probes = [r for r in fake.requests_to("/v1/models") if began < r.received_at < ended - 0.1]
    assert probes == [], "the node probed an engine that was answering"
    assert all(s.up for s in rig.node.ctx.services)


def test_requests_wait_for_a_one_at_a_time_engine_instead_of_failing(make_rig: MakeRig) -> None:
    fake = FakeLMStudio(gen_delay=0.3)
    rig = make_rig({"lms": (fake, {})}, autodetect=FAST_PROBES)
    model = fake.model_ids[0]
    with rig.client() as client, ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(_ask, client, model, f"n{i}") for i in range(4)]
        texts = sorted(c.result(timeout(30)).choices[0].message.content or "" for c in calls)
    assert texts == [f"You said: n{i}" for i in range(4)]


def test_every_503_says_when_to_retry(make_rig: MakeRig) -> None:
    # A configured service where nothing listens: its model is known, its holder is down.
    gone = {"url": "http://127.0.0.1:9/v1", "engine": "openai", "models": [{"id": "m"}]}
    rig = make_rig({"gone": (FakeLMStudio(), gone)})
    response = httpx.post(
        rig.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "no_reachable_holder"
