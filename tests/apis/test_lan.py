"""Every foreign API through a LAN peer: two real ``quorum up`` nodes in network namespaces on
one bridge, found over mDNS. Node A fronts a chat-only fake vLLM and a fake Ollama; the
openai, anthropic and ollama SDKs run in B's namespace against B, which holds nothing.

B passes each request to A as the client sent it (route ``lan``); A translates for vLLM and
passes Ollama's API to Ollama, which the engines' request logs show.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.discovery.harness import DEADLINE_S
from tests.lan.harness import NODE_PORT, FakeEngineProcess, QuorumNode, child_env, poll
from tests.netns import TIMEOUT_FACTOR, Lan, require_netns

CHAT_ONLY = "Qwen/Qwen3-0.6B"
OLLAMA = "llama3.2:1b"

pytestmark = [pytest.mark.netns, pytest.mark.timeout(int(8 * DEADLINE_S))]


def new_token() -> str:
    made = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "token", "new"],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=child_env(),
        check=True,
    )
    return made.stdout.strip()


def test_every_api_through_a_lan_peer(tmp_path: Path) -> None:
    require_netns()
    token = new_token()
    with Lan(2) as lan:
        a, b = lan.hosts
        vllm = FakeEngineProcess(
            lan, a, tmp_path / "vllm.log", kind="vllm", port=8000, models=[CHAT_ONLY]
        )
        engine = FakeEngineProcess(
            lan, a, tmp_path / "ollama.log", kind="ollama", port=11434, models=[OLLAMA]
        )
        procs: list[FakeEngineProcess | QuorumNode] = [vllm, engine]
        try:
            vllm.wait_ready()
            engine.wait_ready()
            services = [
                {"name": "vllm-a", "engine": "vllm", "url": vllm.url + "/v1"},
                {"name": "ollama-a", "engine": "ollama", "url": engine.url},
            ]
            for host, name, offered in ((a, "A", services), (b, "B", [])):
                config = QuorumNode.write_config(
                    tmp_path / f"{name}.yaml",
                    name=name,
                    token=token,
                    data_dir=tmp_path / f"data-{name}",
                    services=offered,
                )
                node = QuorumNode(lan, host, config, tmp_path / f"node-{name}.log")
                procs.append(node)
                node.wait_ready()
            done = lan.run(
                b,
                [
                    sys.executable,
                    "-W",
                    "error",
                    "-m",
                    "tests.apis.lan_client",
                    f"http://127.0.0.1:{NODE_PORT}",
                    CHAT_ONLY,
                    OLLAMA,
                    str(3 * DEADLINE_S),
                ],
                timeout=6 * DEADLINE_S,
                env=child_env(),
            )
            assert done.stdout.strip(), done.stderr[-3000:]
            seen = json.loads(done.stdout.strip().splitlines()[-1])
            assert seen["errors"] == [], "\n".join(seen["errors"])
            assert done.returncode == 0

            responses = seen["responses"]
            assert responses["text"] == "You said: over the lan"
            assert (responses["route"], responses["node"]) == ("lan", "A")
            assert responses["translated"].startswith("responses")
            assert "".join(responses["deltas"]) == "You said: a b c d"
            assert responses["call"] == ["lookup", {"query": "weather in Riga"}]
            assert responses["answered"] == "The tool said: windy"

            messages = seen["messages"]
            assert (messages["text"], messages["route"]) == ("You said: hello lan", "lan")
            assert "".join(messages["pieces"]) == "You said: hello lan"
            assert messages["stop"] == "end_turn"

            # Counted on A: vLLM with its /tokenize, Ollama in a one-token chat.
            assert seen["count"] == {CHAT_ONLY: [2, "lan"], OLLAMA: [2, "lan"]}

            native = seen["ollama"]
            assert native["listed"] == sorted([CHAT_ONLY, OLLAMA]) and native["shown"]
            for model in (CHAT_ONLY, OLLAMA):
                stream = native[f"stream:{model}"]
                assert stream["text"] == "You said: hi lan" and stream["lines"] > 2
                assert stream["done"][-1] and not any(stream["done"][:-1])
                assert native[f"chat:{model}"] == "You said: hi lan"
                assert native[f"generate:{model}"] == "You said: go"

            # A translated for vLLM (chat completions only) and passed Ollama's API through.
            def paths() -> set[str] | None:
                found = {r["path"] for r in vllm.requests() + engine.requests()}
                return found if "/api/generate" in found else None

            got = poll("the engines' request logs", paths, timeout=DEADLINE_S * TIMEOUT_FACTOR)
            assert {"/v1/chat/completions", "/api/chat", "/api/generate", "/tokenize"} <= got
            assert not {"/v1/responses", "/v1/messages"} & got
            assert not any(r["hop"] for r in vllm.requests() + engine.requests())
        finally:
            problems = []
            for proc in reversed(procs):
                code = proc.stop()
                if isinstance(proc, QuorumNode):
                    if code != 0:
                        problems.append(f"node {proc.name} exited {code}:\n{proc.tail()}")
                    problems += [f"node {proc.name}: {line}" for line in proc.problems()]
    assert not problems, "\n".join(problems)
