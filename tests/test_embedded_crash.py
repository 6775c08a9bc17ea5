"""An embedded engine built for another CPU: `quorum up` says so in plain words, and stops trying.

The engine is the stand-in of :mod:`tests.wrong_cpu`: it serves ``/v1/models``
and dies of SIGILL at its first generation, like a native build on the wrong
machine. Each chat kills it; the node restarts it, and after a few deaths in a
row leaves it down and says why: in ``/quorum/v1/status``, ``quorum status``
and the 503 every client gets (with ``Retry-After``). The engine's log keeps
every run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from quorum.engines.embedded import MAX_CRASHES
from tests import wrong_cpu
from tests.harness import free_port, timeout
from tests.test_embedded_e2e import start_up, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/quorum/v1/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def embedded_service(port: int) -> dict[str, Any]:
    (service,) = [s for s in status(port)["services"] if s["name"] == "embedded"]
    assert isinstance(service, dict)
    return service


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[int, Path, dict[str, str]]]:
    fake = wrong_cpu.build(tmp_path / "fake")
    data = tmp_path / "data"
    data.mkdir()
    (data / "none.yaml").write_text("node: {name: solo}\nembedded: {mode: 'on'}\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]),
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_CONFIG": str(data / "none.yaml"),
    }
    port = free_port()
    proc = start_up(port, data, env)
    try:
        wait_healthy(port, proc, 120, data)
        yield port, data, env
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout(20))


def test_a_build_for_another_cpu_is_reported_and_not_restarted_forever(
    node: tuple[int, Path, dict[str, str]],
) -> None:
    port, data, env = node
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=30
    )
    deadline = time.monotonic() + timeout(90)
    chats = 0
    while "not restarted" not in (embedded_service(port).get("error") or ""):
        assert time.monotonic() < deadline, embedded_service(port)
        if embedded_service(port)["up"]:
            chats += 1
            with pytest.raises(openai.APIStatusError) as failed:
                client.chat.completions.create(
                    model="gemma-3-270m", messages=[{"role": "user", "content": "hi"}]
                )
            assert failed.value.status_code in (502, 503)
        else:
            time.sleep(0.1)  # waiting for the node to restart it (its pause is 1 s)
    assert chats == MAX_CRASHES

    service = embedded_service(port)
    assert not service["up"]
    error = service["error"]
    assert "crashed with SIGILL (illegal instruction)" in error
    assert "built for another CPU" in error
    assert "-m quorum.engines.portable --rebuild" in error

    # Every client is told the same, with a 503 that says when to try again.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(
            {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 503
    assert int(refused.value.headers["Retry-After"]) >= 1
    body = json.loads(refused.value.read())
    assert "built for another CPU" in body["error"]["message"]

    shown = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "status", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
    )
    assert "built for another CPU" in shown.stdout, shown.stdout + shown.stderr

    engine_log = (data / "logs" / "embedded-engine.log").read_text()
    assert engine_log.count("--- quorum: starting") == MAX_CRASHES  # kept across restarts
    assert "quorum.engines.portable --rebuild" in (data / "node.log").read_text()


def test_doctor_is_not_fooled_by_an_engine_that_crashes(tmp_path: Path) -> None:
    fake = wrong_cpu.build(tmp_path / "fake")
    data = tmp_path / "data"
    data.mkdir()
    config = data / "c.yaml"
    config.write_text(
        f"node: {{name: solo, data_dir: {json.dumps(str(data))}}}\n"
        "autodetect: {enabled: false}\nembedded: {mode: 'on'}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "doctor", "--config", str(config), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )
    findings = json.loads(done.stdout)
    text = json.dumps(findings)
    assert "does not work" in text and "SIGILL" in text, text
    assert "generated a token" not in text
