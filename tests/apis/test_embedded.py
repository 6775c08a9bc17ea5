"""The real embedded engine (llama-cpp-python serving Gemma 3 270M) behind ``quorum up``,
through Responses, Messages and Ollama's ``/api/chat``, streamed, with each API's own SDK:
the node translates a real engine's chat stream into each API's events. (llama-cpp-python
sends no token counts in a stream, so none come out: each API says "unknown" its own way.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apis.helpers import Wire, anthropic_client, ollama_client, openai_client
from tests.harness import free_port, timeout
from tests.test_embedded_e2e import start_up, wait_healthy

pytestmark = pytest.mark.embedded

MODEL = "gemma-3-270m"
PROMPT = "Write one short sentence about the sea."


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("embedded-apis")
    env = {
        **os.environ,
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_CONFIG": str(data / "config.yaml"),
    }
    (data / "config.yaml").write_text("node: {name: solo}\n")
    proc: subprocess.Popen[str] = start_up(port, data, env)
    try:
        wait_healthy(port, proc, 180, data)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout(20))


def spread(arrivals: list[float]) -> bool:
    """Streamed, not buffered: the first piece came well before the last."""
    return len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0


def test_responses_stream(node: str, wire: Wire) -> None:
    client = openai_client(node + "/v1", wire)
    started = time.monotonic()
    arrivals: list[float] = []
    events: list[Any] = []
    stream = client.responses.create(
        model=MODEL, input=PROMPT, max_output_tokens=24, temperature=0, stream=True
    )
    with stream:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta":
                arrivals.append(time.monotonic() - started)
    last = events[-1]
    # Out of tokens is "incomplete", as OpenAI says it (the SDK's stream helper wants "completed").
    assert last.type in ("response.completed", "response.incomplete"), last.type
    assert last.response.status == last.type.removeprefix("response.")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() and last.response.output_text == text
    assert spread(arrivals), arrivals


def test_messages_stream(node: str, wire: Wire) -> None:
    client = anthropic_client(node, wire)
    started = time.monotonic()
    arrivals: list[float] = []
    with client.messages.stream(
        model=MODEL, max_tokens=24, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic() - started)
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    text: Any = final.content[-1]
    assert text.type == "text" and text.text.strip()
    assert spread(arrivals), arrivals


def test_ollama_chat_stream(node: str, wire: Wire) -> None:
    client = ollama_client(node, wire)
    assert MODEL in [m.model for m in client.list().models]
    started = time.monotonic()
    arrivals: list[float] = []
    parts = []
    for part in client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        options={"num_predict": 24, "temperature": 0},
        stream=True,
    ):
        parts.append(part)
        if part.message.content:
            arrivals.append(time.monotonic() - started)
    last = parts[-1]
    assert last.done and last.done_reason in ("stop", "length")
    assert not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip()
    # llama-cpp-python reports no usage in a stream: the counts are left out, timings are not.
    assert (last.total_duration or 0) > 0 and (last.eval_duration or 0) > 0
    assert spread(arrivals), arrivals


def test_count_tokens(node: str, wire: Wire) -> None:
    """The real engine counts by answering one token: its count is the input tokens the same
    request, answered, reports."""
    client = anthropic_client(node, wire)
    ask: Any = {"system": "Be brief.", "messages": [{"role": "user", "content": PROMPT}]}
    raw = client.messages.with_raw_response.count_tokens(model=MODEL, **ask)
    counted = raw.parse().input_tokens
    assert raw.headers["x-quorum-translated"] == "count_tokens; engine spoke /v1/chat/completions"
    answered = client.messages.create(model=MODEL, max_tokens=4, **ask)
    assert counted == answered.usage.input_tokens > 10
