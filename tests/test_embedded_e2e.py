"""The real thing: `quorum up` as a process, serving Gemma 3 270M through llama-cpp-python."""

from __future__ import annotations

import json
import os
import signal
import socket
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

from tests.harness import free_port, timeout

pytestmark = pytest.mark.embedded

MODEL = "gemma-3-270m"


def quorum(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
        env=env,
    )


def start_up(port: int, data: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`quorum up` as a child process; its log goes to data/node.log."""
    with (data / "node.log").open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quorum.cli",
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_healthy(port: int, proc: subprocess.Popen[str], seconds: float, data: Path) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"quorum up exited: {(data / 'node.log').read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the node did not become healthy in time")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    data = tmp_path_factory.mktemp("embedded-node")
    env = {
        **os.environ,
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_CONFIG": str(data / "none.yaml"),
    }
    (data / "none.yaml").write_text("node: {name: solo}\n")
    proc = start_up(port, data, env)
    try:
        wait_healthy(port, proc, 180, data)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout(20))


@pytest.fixture
def client(node: tuple[int, subprocess.Popen[str]]) -> Iterator[openai.OpenAI]:
    """An SDK client of the node, closed after the test (its pool's sockets with it)."""
    port, _ = node
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120
    ) as made:
        yield made


def test_streaming_chat_through_the_node(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]
    started = time.monotonic()
    arrivals: list[float] = []
    text = ""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a short sentence about the sea."}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
    assert len(arrivals) >= 5, text
    # Streamed, not buffered: the first token arrived well before the last one.
    assert arrivals[0] < arrivals[-1]
    assert text.strip()


def test_non_streaming_chat_and_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    completion = raw.parse()
    assert raw.headers["x-quorum-node"] == "solo"
    assert raw.headers["x-quorum-route"] == "local"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


async def test_async_completion(node: tuple[int, subprocess.Popen[str]]) -> None:
    port, _ = node
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
    )
    async with client:
        done = await client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5)
    assert done.choices[0].text


def test_status_and_models_commands(node: tuple[int, subprocess.Popen[str]]) -> None:
    port, _ = node
    status = quorum("status", "--json", "--port", str(port))
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["node"]["name"] == "solo"
    (service,) = data["services"]
    assert (service["name"], service["engine"], service["up"]) == ("embedded", "embedded", True)
    models = quorum("models", "--port", str(port))
    assert MODEL in models.stdout and "solo (local)" in models.stdout


def test_status_without_a_node_is_a_clear_error() -> None:
    result = quorum("status", "--port", str(free_port()))
    assert result.returncode == 1
    assert "no node answers" in result.stderr and "quorum up" in result.stderr


def test_sigterm_stops_node_and_engine(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_CONFIG": str(tmp_path / "c.yaml"),
    }
    (tmp_path / "c.yaml").write_text("embedded: {mode: 'on'}\n")
    proc = start_up(port, tmp_path, env)
    wait_healthy(port, proc, 180, tmp_path)
    engine_port = json.loads(quorum("status", "--json", "--port", str(port)).stdout)["services"][0][
        "url"
    ].rsplit(":", 1)[1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout(20)) == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(engine_port)), 1):
        pass


def test_second_node_on_same_port_fails_clearly(
    node: tuple[int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, _ = node
    result = quorum(
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        "--embedded",
        "off",
        env={**os.environ, "QUORUM_AUTODETECT__ENABLED": "false"},
    )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "already in use" in result.stderr


def _ask(client: openai.OpenAI, text: str, tokens: int) -> ChatCompletion:
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0
    )


def _ask_raw(client: openai.OpenAI, text: str, tokens: int) -> LegacyAPIResponse[ChatCompletion]:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0
    )


def _long_stream(port: int, tokens: int, first: threading.Event) -> tuple[str | None, int]:
    """Stream a long answer; returns (the last finish_reason seen, content chunks)."""
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120
    ) as client:
        return _stream_from(client, tokens, first)


def _stream_from(
    client: openai.OpenAI, tokens: int, first: threading.Event
) -> tuple[str | None, int]:
    finish = None
    count = 0
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                count += 1
                first.set()
            finish = choice.finish_reason or finish
    return finish, count


def test_a_long_stream_is_not_cut_when_another_request_arrives(
    node: tuple[int, subprocess.Popen[str]], client: openai.OpenAI
) -> None:
    """llama-cpp-python ends a running stream when a request arrives, unless told not to."""
    port, _ = node
    first = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        # 300 tokens: long enough to be running when the second request comes, short enough
        # to end within the node's 30 s queue wait on a slow 2-core machine (~16 tokens/s).
        streaming = pool.submit(_long_stream, port, 300, first)
        assert first.wait(timeout(60)), "the stream never started"
        second = pool.submit(_ask, client, "Say hi.", 8)
        client.models.list()  # what every app does now and then
        finish, chunks = streaming.result(timeout(180))
        answer = second.result(timeout(180))
    assert finish in ("length", "stop"), f"the stream ended without a finish_reason ({chunks})"
    assert chunks >= 100 or finish == "stop"
    assert answer.choices[0].finish_reason in ("length", "stop")


def _wait_in_flight(port: int, count: int) -> None:
    line = f'quorum_in_flight_requests{{model="{MODEL}",route="local"}} {count:.1f}'
    deadline = time.monotonic() + timeout(30)
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            if line in resp.read().decode():
                return
        time.sleep(0.02)
    raise AssertionError(f"never {count} request(s) in flight")


def test_a_request_sent_during_a_long_answer_waits_and_is_served(
    node: tuple[int, subprocess.Popen[str]], client: openai.OpenAI
) -> None:
    port, _ = node
    with ThreadPoolExecutor(2) as pool:
        long = pool.submit(_ask_raw, client, "Write a very long story about a lighthouse.", 400)
        _wait_in_flight(port, 1)  # the second request arrives mid-answer
        short = pool.submit(_ask_raw, client, "Say hi.", 8)
        first, second = long.result(timeout(180)), short.result(timeout(180))
    assert first.http_response.status_code == 200
    assert second.http_response.status_code == 200
    assert first.parse().choices[0].finish_reason in ("length", "stop")
    assert second.parse().choices[0].finish_reason in ("length", "stop")
