"""What the relay's socket carries during relayed chats between two nodes: ciphertext.

A real relay process on loopback, tcpdump on its port, two nodes that reach each
other only through it; B's client asks for A's model with prompts nobody else
would write. The capture must show the streams (their outer head) and neither the
prompts nor the answers: the nodes encrypt end to end, the relay pipes ciphertext.
(The tunnel's WebSocket is plain ``ws://`` here, so the capture is what the relay
process itself reads.)

An app with an API key then asks the relay's public ``/v1`` with another such
prompt. TLS from the app ends at the relay (here plain HTTP: the app's leg shows
the prompt, which proves the capture saw it); on the relay -> node A leg, inside
A's tunnel, it must not appear: the relay and A speak TLS there (``relay.hop``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

from quorum.app import Node
from quorum.secure.hop import HOP_PATH
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster, relay_cli
from tests.relay.pcap_flows import flows
from tests.relay.test_relay_e2e import holders, wait_until

MODEL = "Qwen/Qwen3-0.6B"
PROMPTS = ("heron-basalt-relayed-prompt-5310", "otter-garnet-relayed-stream-2264")
PUBLIC = "lynx-cobalt-public-v1-prompt-8817"


def _node(bg: LoopThread, tmp: Path, name: str, token: str, url: str, services: Any) -> Node:
    config = node_config(
        tmp / name,
        node={"name": name},
        cluster={"token": token},
        relay={"url": url},
        discovery={"enabled": False},
        services=services,
    )
    return bg.run(start_node(config))


def test_the_relay_carries_no_prompt_or_answer(bg: LoopThread, tmp_path: Path) -> None:
    assert shutil.which("tcpdump"), "tcpdump is needed (scripts/test installs it)"
    (tmp_path / "relay").mkdir()
    token = create_cluster(tmp_path / "relay", "home")
    relay = Relay(tmp_path / "relay").start()
    pcap = tmp_path / "relay.pcap"
    port = urlsplit(relay.url).port
    capture = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "--immediate-mode",
            "-n",
            "-U",
            "-w",
            str(pcap),
            f"tcp port {port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    vllm = FakeVLLM(chunks=6, chunk_delay=0.01)
    nodes: list[Node] = []
    try:
        wait_until(lambda: pcap.exists() and pcap.stat().st_size >= 24, 10, "tcpdump capturing")
        engine = bg.run(vllm.start())
        nodes.append(
            _node(bg, tmp_path, "node-a", token, relay.url, [{"name": "v", "url": engine}])
        )
        nodes.append(_node(bg, tmp_path, "node-b", token, relay.url, []))
        b = nodes[1]
        wait_until(lambda: any(h["route"] == "relay" for h in holders(b, MODEL)), 10, "A at B")
        with openai.OpenAI(
            base_url=b.url + "/v1", api_key="x", max_retries=0, timeout=timeout(30)
        ) as c:
            raw = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}]
            )
            assert raw.headers["x-quorum-route"] == "relay"
            assert raw.parse().choices[0].message.content == f"You said: {PROMPTS[0]}"
            stream = c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], stream=True
            )
            with stream:
                text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            assert text == f"You said: {PROMPTS[1]}"
        outbox = b.ctx.outbox
        assert outbox is not None
        wait_until(lambda: outbox.shipped >= 2, 10, "B's usage at the relay")  # on the wire too
        key = json.loads(
            relay_cli(tmp_path / "relay", "key", "create", "--cluster", "home", "--json")
        )
        with openai.OpenAI(
            base_url=relay.http + "/v1", api_key=key["key"], max_retries=0, timeout=timeout(30)
        ) as app:
            raw = app.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": PUBLIC}]
            )
            assert raw.headers["x-quorum-node"] == "node-a"
            assert raw.parse().choices[0].message.content == f"You said: {PUBLIC}"
    finally:
        for node in nodes:
            bg.run(node.stop())
        bg.run(vllm.stop())
        relay.kill()
        capture.terminate()
        capture.wait(timeout(10))
    seen = pcap.read_bytes()
    assert b"/quorum/v1/e2e" in seen  # the relayed streams were captured (their outer head)
    for secret in PROMPTS:
        assert secret.encode() not in seen, secret
    by_flow = flows(pcap)
    tunnels = {f[0] for f, sent in by_flow.items() if sent.startswith(b"GET /tunnel")}
    tunnel_bytes = [sent for f, sent in by_flow.items() if f[0] in tunnels or f[1] in tunnels]
    apps = [sent for sent in by_flow.values() if sent.startswith(b"POST /v1/chat/completions")]
    assert len(tunnels) >= 2 and apps and PUBLIC.encode() in apps[0]  # the app's leg: clear
    for sent in tunnel_bytes:  # the relay -> node legs: ciphertext
        for secret in (PUBLIC, *PROMPTS, "You said"):
            assert secret.encode() not in sent, secret
    assert any(HOP_PATH.encode() in sent for sent in tunnel_bytes)  # the relay's hop to A
    # Tunnel joins, usage uploads: nodes prove membership, the token never travels.
    assert token.encode() not in seen
    assert token[3:20].encode() not in seen
