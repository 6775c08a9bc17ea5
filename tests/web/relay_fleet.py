"""A relay worth looking at: a real relay process, two real nodes joined through it, history.

The relay is ``quorum-relay serve`` (``tests.relay.harness.Relay``) with two clusters,
``home`` and ``lab``. Two in-process nodes of ``home`` (on the ``bg`` loop) reach it
only through their tunnels, with fake engines behind them: ``gpu-box`` (vLLM and a
Whisper service) and ``laptop`` (Ollama); both hold ``qwen3:0.6b``. ``seed_history``
ships a day of usage records the way nodes ship theirs (``POST /api/v1/usage`` with
the cluster token), so the usage charts have something to draw.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import openai

from quorum.app import Node
from quorum.protocol import RequestUsage, UsageBatch
from tests.fakes import FakeEngine, FakeOllama, FakeVLLM, FakeWhisper, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.test_relay_e2e import wait_until

SHARED_MODEL = "qwen3:0.6b"
GPU_MODEL = "Qwen/Qwen3-30B-A3B"
LAPTOP_MODEL = "llama3.2:1b"


class RelayFleet:
    def __init__(self, bg: LoopThread, tmp: Path) -> None:
        self.bg, self.tmp = bg, tmp
        self.data = tmp / "relay"
        self.data.mkdir()
        self.token = create_cluster(self.data, "home")
        create_cluster(self.data, "lab")
        self.admin = relay_cli(self.data, "admin-token").strip()
        self.relay = Relay(self.data).start()
        self.fakes: list[FakeEngine] = []
        self.nodes: list[Node] = []
        self.gpu = self.node(
            "gpu-box",
            {
                "vllm": (FakeVLLM(models=[GPU_MODEL, SHARED_MODEL]), {"engine": "vllm"}),
                "asr": (FakeWhisper(), {"type": "stt", "engine": "vllm"}),
            },
        )
        self.laptop = self.node(
            "laptop",
            {"ollama": (FakeOllama(models=[LAPTOP_MODEL, SHARED_MODEL]), {"engine": "ollama"})},
        )
        self.wait_connected("gpu-box", "laptop")

    @property
    def url(self) -> str:
        return self.relay.http + "/"

    def node(self, name: str, services: dict[str, tuple[FakeEngine, dict[str, Any]]]) -> Node:
        entries = []
        for service, (fake, extra) in services.items():
            self.fakes.append(fake)
            entries.append({"name": service, "url": self.bg.run(fake.start()), **extra})
        config = node_config(
            self.tmp / name,
            node={"name": name},
            cluster={"token": self.token},
            relay={"url": self.relay.url},
            discovery={"enabled": False},
            services=entries,
        )
        made = self.bg.run(start_node(config))
        self.nodes.append(made)
        return made

    def stop(self, node: Node) -> None:
        self.nodes.remove(node)
        self.bg.run(node.stop())

    def api(self, path: str, body: Any = None, token: str | None = None) -> Any:
        request = urllib.request.Request(
            self.relay.http + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token or self.admin}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout(10)) as resp:
            return json.load(resp)

    def node_rows(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.api("/api/v1/nodes?cluster=home")["data"]}

    def wait_connected(self, *names: str) -> None:
        def ready() -> bool:
            rows = self.node_rows()
            return all(
                n in rows and rows[n]["connected"] and rows[n]["online"] and rows[n]["models"]
                for n in names
            )

        wait_until(ready, 15, f"{', '.join(names)} connected to the relay")

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.relay.http + "/v1", api_key=key, max_retries=0, timeout=timeout(30)
        )

    def seed_history(self, count: int = 60, seed: int = 7) -> None:
        """A day of usage from the cluster's own machines, as nodes would have shipped it."""
        rng = random.Random(seed)
        now_ms = int(time.time() * 1000)
        served = [("gpu-box", GPU_MODEL), ("gpu-box", SHARED_MODEL), ("laptop", LAPTOP_MODEL)]
        records = []
        for _ in range(count):
            node, model = rng.choice(served)
            ttfb = rng.uniform(40, 90) if node == "gpu-box" else rng.uniform(120, 300)
            failed = rng.random() < 0.05
            records.append(
                RequestUsage(
                    request_id=uuid.uuid4().hex,
                    time_ms=now_ms - int(rng.uniform(600, 23 * 3600) * 1000),
                    model=model,
                    endpoint="chat",
                    route=rng.choice(["local", "lan", "relay"]),
                    node=node,
                    status=502 if failed else 200,
                    duration_ms=ttfb + rng.uniform(200, 2000),
                    ttfb_ms=ttfb,
                    prompt_tokens=rng.randint(20, 400),
                    completion_tokens=None if failed else rng.randint(50, 900),
                    error="engine_error" if failed else None,
                )
            )
        body = json.loads(UsageBatch(tuple(records)).encode())
        assert self.api("/api/v1/usage", body, token=self.token)["accepted"] == count

    def seed_keys(self) -> list[dict[str, Any]]:
        """Keys an operator made with the CLI; the first one used once from outside."""
        made = [
            new_key(self.data, "home", "ci runner", "--models", SHARED_MODEL, "--expires", "90d"),
            new_key(self.data, "home", "home assistant"),
        ]
        with self.client(made[0]["key"]) as client:
            client.chat.completions.create(
                model=SHARED_MODEL, messages=[{"role": "user", "content": "nightly check"}]
            )
        return made

    def close(self) -> None:
        for node in list(self.nodes):
            with contextlib.suppress(Exception):
                self.stop(node)
        for fake in self.fakes:
            with contextlib.suppress(Exception):
                self.bg.run(fake.stop())
        self.relay.kill()


def new_key(data: Path, cluster: str, name: str, *options: str) -> dict[str, Any]:
    """A key made by the CLI on the store (as an operator would); ``key`` holds the secret."""
    made: dict[str, Any] = json.loads(
        relay_cli(data, "key", "create", "--cluster", cluster, "--name", name, *options, "--json")
    )
    return made
