"""The real embedded engine and a slow fake hold the same model: the fast one carries the work.

Nothing is configured about capacity: the node learns from the answers that
the fake takes seconds per request and the embedded engine a fraction of
that, and sends the rest where they finish first, waiting for the embedded
engine's one slot rather than starting on the slow fake.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.fakes import FakeVLLM
from tests.fakes.net import LoopThread
from tests.harness import free_port, timeout
from tests.test_embedded_e2e import MODEL, start_up, wait_healthy

pytestmark = pytest.mark.embedded

SLOW_S = 6.0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, FakeVLLM]]:
    with LoopThread("slow-engine") as loop:
        slow = FakeVLLM(models=[MODEL], gen_delay=SLOW_S)
        loop.run(slow.start())  # serves on its own loop thread
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(
            "node: {name: pair}\n"
            "embedded: {mode: 'on'}\n"
            f"services: [{{name: slow, url: '{slow.url}/v1'}}]\n"
        )
        env = {
            **os.environ,
            "QUORUM_AUTODETECT__ENABLED": "false",
            "QUORUM_CONFIG": str(config),
        }
        proc = start_up(port, tmp_path, env)
        try:
            wait_healthy(port, proc, 180, tmp_path)
            yield port, slow
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout(20))
            loop.run(slow.stop())


def _ask(port: int, i: int) -> str:
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=timeout(60)
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=4
        )
        return raw.headers.get("X-Quorum-Queue-Wait-Ms", "")


def test_the_embedded_engine_carries_the_work_and_the_slow_fake_helps_little(
    pair: tuple[int, FakeVLLM],
) -> None:
    port, slow = pair
    for i in range(3):  # one at a time: each engine is tried and measured
        _ask(port, i)
    with ThreadPoolExecutor(6) as pool:
        waits = list(pool.map(lambda i: _ask(port, i), range(3, 15)))
    assert all(w.isdigit() for w in waits)  # every answer says how long it waited
    assert any(int(w) > 0 for w in waits)  # some waited for the embedded engine's slot
    to_slow = len(slow.requests_to("/v1/chat/completions"))
    # Tried once while unknown (both take turns), then at most once more: the rest
    # finished sooner on the embedded engine.
    assert 1 <= to_slow <= 2, to_slow
