"""The three SDKs against a node, as a process for a network namespace:
``python3 -m tests.apis.lan_client URL CHAT_MODEL OLLAMA_MODEL DEADLINE_S``.

Waits (until ``DEADLINE_S`` seconds have passed) for the node at ``URL`` to list
both models, then speaks each foreign API once with its own SDK, unchanged:
OpenAI Responses (whole, streamed, a tool round trip), Anthropic Messages (whole
and streamed), Ollama's list, show, chat (streamed and not) and generate. Prints
one JSON object of what it saw on stdout and exits 0; anything that raised is in
``errors`` (and the exit status is 1).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import anthropic
import ollama
import openai

LOOKUP = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


def wait_listed(client: ollama.Client, models: set[str], deadline: float) -> None:
    while True:
        try:
            if models <= {m.model for m in client.list().models}:
                return
        except (ollama.ResponseError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sorted(models)} not listed in time")
        time.sleep(0.2)


def responses(client: openai.OpenAI, model: str) -> dict[str, Any]:
    raw = client.responses.with_raw_response.create(model=model, input="over the lan")
    whole = raw.parse()
    with client.responses.stream(model=model, input="a b c d") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    tool: Any = {"type": "function", "name": "lookup", "parameters": LOOKUP}
    asked = client.responses.create(model=model, input="weather in Riga", tools=[tool])
    (call,) = [item for item in asked.output if item.type == "function_call"]
    history: Any = [
        {"role": "user", "content": "weather in Riga"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": "{}"},
        {"type": "function_call_output", "call_id": call.call_id, "output": "windy"},
    ]
    answered = client.responses.create(model=model, input=history, tools=[tool])
    return {
        "text": whole.output_text,
        "route": raw.headers.get("x-quorum-route"),
        "node": raw.headers.get("x-quorum-node"),
        "translated": raw.headers.get("x-quorum-translated"),
        "deltas": deltas,
        "call": [call.name, json.loads(call.arguments)],
        "answered": answered.output_text,
    }


def messages(client: anthropic.Anthropic, model: str) -> dict[str, Any]:
    hello: Any = [{"role": "user", "content": "hello lan"}]
    raw = client.messages.with_raw_response.create(model=model, max_tokens=32, messages=hello)
    whole: Any = raw.parse()
    with client.messages.stream(model=model, max_tokens=32, messages=hello) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    return {
        "text": whole.content[0].text,
        "route": raw.headers.get("x-quorum-route"),
        "pieces": pieces,
        "stop": final.stop_reason,
    }


def count(client: anthropic.Anthropic, models: list[str]) -> dict[str, Any]:
    hello: Any = [{"role": "user", "content": "hello lan"}]
    out: dict[str, Any] = {}
    for model in models:
        raw = client.messages.with_raw_response.count_tokens(model=model, messages=hello)
        out[model] = [raw.parse().input_tokens, raw.headers.get("x-quorum-route")]
    return out


def native_ollama(client: ollama.Client, chat_model: str, model: str) -> dict[str, Any]:
    hi: Any = [{"role": "user", "content": "hi lan"}]
    out: dict[str, Any] = {"listed": sorted(m.model or "" for m in client.list().models)}
    out["shown"] = client.show(model).details is not None
    for name in (chat_model, model):
        parts = list(client.chat(model=name, messages=hi, stream=True))
        out[f"stream:{name}"] = {
            "text": "".join(p.message.content or "" for p in parts),
            "lines": len(parts),
            "done": [p.done for p in parts],
        }
        out[f"chat:{name}"] = client.chat(model=name, messages=hi, stream=False).message.content
        out[f"generate:{name}"] = client.generate(model=name, prompt="go", stream=False).response
    return out


def main() -> int:
    url, chat_model, ollama_model, seconds = sys.argv[1:5]
    deadline = time.monotonic() + float(seconds)
    timeout = float(seconds)
    seen: dict[str, Any] = {}
    errors: list[str] = []
    with (
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=timeout) as oa,
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=timeout) as an,
    ):
        local = ollama.Client(host=url, timeout=timeout)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("listed", lambda: wait_listed(local, {chat_model, ollama_model}, deadline)),
            ("responses", lambda: responses(oa, chat_model)),
            ("messages", lambda: messages(an, chat_model)),
            ("count", lambda: count(an, [chat_model, ollama_model])),
            ("ollama", lambda: native_ollama(local, chat_model, ollama_model)),
        ]
        for name, step in steps:
            try:
                seen[name] = step()
            except Exception:  # every failure is reported, and the rest still runs
                errors.append(f"{name}: {traceback.format_exc(limit=3)}")
    print(json.dumps({**seen, "errors": errors}), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
