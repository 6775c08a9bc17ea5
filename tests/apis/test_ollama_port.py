"""`quorum up --ollama-port 11434`: apps that assume Ollama reach the cluster on its port."""

from __future__ import annotations

import socket

import ollama

from tests.conftest import MakeRig
from tests.fakes import FakeVLLM
from tests.harness import free_port

MODEL = "Qwen/Qwen3-0.6B"


def test_the_node_answers_on_ollamas_port_and_never_detects_itself(make_rig: MakeRig) -> None:
    port = free_port()
    rig = make_rig(
        {"vllm": (FakeVLLM(models=[MODEL]), {})},
        node={"ollama_port": port},
        autodetect={
            "enabled": True,
            "targets": [{"engine": "ollama", "url": f"http://127.0.0.1:{port}"}],
        },
    )
    assert rig.node.ollama_port == port
    with ollama.Client(host=f"http://127.0.0.1:{port}") as client:
        assert [m.model for m in client.list().models] == [MODEL]
        answer = client.chat(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=False
        )
    assert answer.message.content == "You said: hi"
    assert [s.name for s in rig.node.ctx.services] == ["vllm"]  # not itself, as "ollama"


def test_a_real_ollama_on_the_port_keeps_it(make_rig: MakeRig) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rig = make_rig({"vllm": (FakeVLLM(models=[MODEL]), {})}, node={"ollama_port": port})
        assert rig.node.ollama_port is None  # started all the same, without that port
