"""A node worth looking at: three engines, a LAN peer, a relay peer, a gone peer, traffic.

The node and its engines are real (fakes on loopback). The peers are put into the
node's fleet the way discovery and the tunnel put them there (``PeerHoldersChanged``,
the ``peers`` view): no mDNS or relay is needed to see how the page shows them. Their
holders point at a closed loopback port, so nothing ever leaves this machine.
"""

from __future__ import annotations

import contextlib
from typing import Any

import openai

from quorum.app import Node
from quorum.config.models import EngineKind, ServiceType
from quorum.discovery.peers import PeerView
from quorum.fleet import Holder, PeerHoldersChanged, Route, apply
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeOllama, FakeVLLM, FakeWhisper, closed_port_url

TOKEN = "studio-cluster-token-0123456789"
LONG_MODEL = "hf.co/bartowski/Qwen2.5-Coder-32B-Instruct-GGUF:Q4_K_M"
LAN_PEER, RELAY_PEER, GONE_PEER = "laptop", "gpu-box", "old-mac"
LAN_MODEL, RELAY_MODEL = "gemma3:4b", "Qwen/Qwen3-235B-A22B"


def studio(make_rig: MakeRig, *, name: str = "studio", traffic: bool = True, **config: Any) -> Rig:
    rig = make_rig(
        {
            "ollama": (
                FakeOllama(
                    models=["llama3.2:1b", "qwen3:0.6b", LONG_MODEL], loaded=["llama3.2:1b"]
                ),
                {"engine": "ollama"},
            ),
            "vllm-qwen": (FakeVLLM(models=["Qwen/Qwen3-30B-A3B"]), {"engine": "vllm"}),
            "asr": (FakeWhisper(), {"type": "stt", "engine": "vllm"}),
        },
        node={"name": name},
        cluster={"token": TOKEN},
        **config,
    )
    rig.bg.run(add_peers(rig.node, closed_port_url()))
    if traffic:
        client = rig.client()
        client.chat.completions.create(
            model="llama3.2:1b", messages=[{"role": "user", "content": "hello"}]
        )
        stream = client.chat.completions.create(
            model="Qwen/Qwen3-30B-A3B",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
        )
        with stream:
            for _ in stream:
                pass
        with contextlib.suppress(openai.NotFoundError):  # an error row, as users see them
            client.chat.completions.create(
                model="llama-9000", messages=[{"role": "user", "content": "hi"}]
            )
    return rig


def _holder(model: str, node_id: str, name: str, route: Route, url: str) -> Holder:
    return Holder(
        model=model,
        type=ServiceType.LLM,
        node_id=node_id,
        node_name=name,
        route=route,
        service="ollama" if route is Route.LAN else "vllm",
        engine=EngineKind.OLLAMA if route is Route.LAN else EngineKind.VLLM,
        url=url,
        upstream_model=model,
    )


async def add_peers(node: Node, dead_url: str) -> None:
    """Runs on the node's loop, like discovery and the tunnel would."""
    ctx = node.ctx
    lan = _holder(LAN_MODEL, "id-laptop", LAN_PEER, Route.LAN, dead_url)
    relay = _holder(RELAY_MODEL, "id-gpu-box", RELAY_PEER, Route.RELAY, dead_url)
    ctx.snapshot = apply(ctx.snapshot, PeerHoldersChanged("id-laptop", (lan,), Route.LAN))
    ctx.snapshot = apply(ctx.snapshot, PeerHoldersChanged("id-gpu-box", (relay,), Route.RELAY))
    views = (
        PeerView("id-laptop", LAN_PEER, ("192.168.1.23",), 32768, True, 4.0, (LAN_MODEL,)),
        PeerView("id-old-mac", GONE_PEER, ("192.168.1.40",), 32768, False, 754.0, ()),
    )
    ctx.peers = lambda: views
