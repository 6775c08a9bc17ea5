"""An engine that thinks aloud (vLLM's ``reasoning_content``), through each foreign API with
its own SDK: a Responses ``reasoning`` item, an Anthropic ``thinking`` block, Ollama's
``thinking``; whole and streamed, the thoughts kept apart from the answer."""

from __future__ import annotations

from typing import Any

from tests.apis.helpers import Wire, anthropic_client, ollama_client, openai_client
from tests.conftest import MakeRig, Rig
from tests.fakes import FakeVLLM

MODEL = "Qwen/Qwen3-0.6B"
THOUGHTS = "The user greets me, so I greet back."


def thinking(make_rig: MakeRig) -> Rig:
    return make_rig({"vllm": (FakeVLLM(models=[MODEL], reasoning=THOUGHTS), {})})


def test_responses_reasoning_items(make_rig: MakeRig, wire: Wire) -> None:
    client = openai_client(thinking(make_rig).base_url, wire)
    done = client.responses.create(model=MODEL, input="hello")
    kinds = [item.type for item in done.output]
    assert kinds == ["reasoning", "message"]
    reasoning: Any = done.output[0]
    assert "".join(c.text for c in reasoning.content) == THOUGHTS
    assert done.output_text == "You said: hello"
    with client.responses.stream(model=MODEL, input="hello again") as stream:
        events = list(stream)
        final = stream.get_final_response()
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (thought, text) == (THOUGHTS, "You said: hello again")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == "You said: hello again"


def test_anthropic_thinking_blocks(make_rig: MakeRig, wire: Wire) -> None:
    client = anthropic_client(thinking(make_rig).node.url, wire)
    message = client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    first: Any = message.content[0]
    assert first.thinking == THOUGHTS
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello again"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: hello again"
    block: Any = final.content[0]
    assert (block.type, block.thinking) == ("thinking", THOUGHTS)
    # The thoughts go back with the next turn, as Claude clients send them; engines never see them.
    history: Any = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": "and now?"},
    ]
    again = client.messages.create(model=MODEL, max_tokens=64, messages=history)
    assert again.content[-1].text == "You said: and now?"  # type: ignore[union-attr]


def test_ollama_thinking(make_rig: MakeRig, wire: Wire) -> None:
    client = ollama_client(thinking(make_rig).node.url, wire)
    hello: Any = [{"role": "user", "content": "hello"}]
    whole = client.chat(model=MODEL, messages=hello, stream=False)
    assert (whole.message.thinking, whole.message.content) == (THOUGHTS, "You said: hello")
    parts = list(client.chat(model=MODEL, messages=hello, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHTS
    assert "".join(p.message.content or "" for p in parts) == "You said: hello"
    generated = client.generate(model=MODEL, prompt="hello", stream=False)
    assert (generated.thinking, generated.response) == (THOUGHTS, "You said: hello")
