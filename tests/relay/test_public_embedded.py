"""The relay's public /v1 with the openai SDK, from outside any node, streaming from the real
embedded engine (Gemma 3 270M through llama-cpp-python) on a `quorum up` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from tests.harness import timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

pytestmark = pytest.mark.embedded

MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, str, str]]:
    tmp = tmp_path_factory.mktemp("public-embedded")
    data = tmp / "relay"
    data.mkdir()
    token = create_cluster(data, "home")
    key = json.loads(relay_cli(data, "key", "create", "--cluster", "home", "--json"))["key"]
    admin = relay_cli(data, "admin-token").strip()
    relay = Relay(data).start()
    node_dir = tmp / "node"
    node_dir.mkdir()
    (node_dir / "config.yaml").write_text("node: {name: gemma-box}\nembedded: {mode: 'on'}\n")
    env = {
        **os.environ,
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_CONFIG": str(node_dir / "config.yaml"),
        # The token on the command line would be visible to `ps`; the env var is not.
        "QUORUM_CLUSTER__TOKEN": token,
    }
    with (node_dir / "node.log").open("w") as log:
        node = subprocess.Popen(
            [
                # Port 0: the node binds a free port itself (the test never calls it), so no
                # other process can take the port between a pick and the bind.
                *(sys.executable, "-m", "quorum.cli", "up", "--port", "0"),
                *("--data-dir", str(node_dir), "--relay", relay.url, "--no-mdns"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def served() -> bool:
            assert node.poll() is None, (node_dir / "node.log").read_text()
            request = urllib.request.Request(
                relay.http + "/v1/models", headers={"Authorization": f"Bearer {key}"}
            )
            with urllib.request.urlopen(request, timeout=timeout(5)) as resp:
                return MODEL in [m["id"] for m in json.load(resp)["data"]]

        wait_until(served, 240, "the embedded model at the relay")
        yield relay, key, admin
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout(30))
        relay.kill()


def test_streaming_chat_from_outside_any_node(setup: tuple[Relay, str, str]) -> None:
    relay, key, admin = setup
    client = openai.OpenAI(
        base_url=relay.http + "/v1", api_key=key, max_retries=0, timeout=timeout(120)
    )
    with client:
        started = time.monotonic()
        arrivals: list[float] = []
        text = ""
        usage = None
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a short sentence about the sea."}],
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic() - started)
                    text += chunk.choices[0].delta.content
                if chunk.usage is not None:
                    usage = chunk.usage
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert len(arrivals) >= 5 and arrivals[0] < arrivals[-1], text
    assert text.strip()
    assert raw.headers["x-quorum-route"] == "relay"
    assert raw.headers["x-quorum-node"] == "gemma-box"
    done = raw.parse()
    assert done.usage is not None
    # llama-cpp-python's server may ignore include_usage: then only the other answer counts.
    want = done.usage.completion_tokens + (usage.completion_tokens if usage else 0)

    def recorded() -> bool:
        request = urllib.request.Request(
            relay.http + "/api/v1/usage?cluster=home&by=model",
            headers={"Authorization": f"Bearer {admin}"},
        )
        with urllib.request.urlopen(request, timeout=timeout(5)) as resp:
            rows = json.load(resp)["data"]
        return any(
            (r["model"], r["requests"], r["errors"], r["completion_tokens"]) == (MODEL, 2, 0, want)
            for r in rows
        )

    wait_until(recorded, 10, "the usage in the relay's store")
