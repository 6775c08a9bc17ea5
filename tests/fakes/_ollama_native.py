"""Ollama's native generation API on :class:`~tests.fakes.ollama.FakeOllama`.

Shapes follow ollama/ollama ``docs/api.md`` and ``api/types.go`` (0.9.x):

- ``POST /api/chat`` ``{model, messages, tools, format, options, stream, keep_alive}``:
  streamed by default as ``application/x-ndjson``, one object a line:
  ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``,
  a tool call as one line whose message has ``tool_calls: [{"function": {"index",
  "name", "arguments": {...}}}]`` (arguments an object), then the last line
  ``{"model", "created_at", "message": {"role": "assistant", "content": ""},
  "done_reason": "stop", "done": true, "total_duration", "load_duration",
  "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}``
  (durations in nanoseconds). ``"stream": false`` gives that last object with the whole
  message. No messages: the model is only loaded (``done_reason: "load"``).
- ``POST /api/generate`` ``{model, prompt, system, suffix, raw, stream, ...}``: lines
  carry ``response``; the last has ``context`` (token ids) and the metrics. An empty
  prompt only loads the model.
- ``POST /api/embed`` ``{model, input: str | [str], dimensions}``:
  ``{"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}``;
  ``POST /api/embeddings`` ``{model, prompt}``: ``{"embedding"}``.
- ``created_at`` is Go's ``time.Time`` in JSON: RFC 3339 with nanoseconds and the zone.
- Errors are ``{"error": "..."}``: 400 ``model is required``, a body that is not JSON
  (Go's decoder message), 404 ``model "x" not found, try pulling it first``.

What the model answers follows :mod:`._turn` (tools offered: a call of the first one;
a conversation ending in a ``tool`` message: ``The tool said: ...``). Every generation
takes a slot of the model's pool like its ``/v1`` twin.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ._openai import JSONDict, OpenAICompatEngine, fake_embedding, split_pieces
from ._turn import ToolSpec, Turn, count_words, params_of, plan_turn

NDJSON = "application/x-ndjson"
GIN_JSON = "application/json; charset=utf-8"


def go_time() -> str:
    """``time.Now()`` as Go writes it in JSON: ``2025-07-02T10:04:05.123456789+02:00``."""
    ns = time.time_ns()
    local = datetime.fromtimestamp(ns // 1_000_000_000, UTC).astimezone()
    stamp = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}"
    offset = local.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return stamp + zone


def line(obj: JSONDict) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


async def _body(engine: OpenAICompatEngine, request: web.Request) -> JSONDict | web.Response:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return engine.error_response(request, 400, "invalid character looking for value")
    if not isinstance(body, dict):
        return engine.error_response(
            request, 400, "json: cannot unmarshal into Go value of type api.ChatRequest"
        )
    return body


def _metrics(turn: Turn, began: int, *, generation: bool = True) -> JSONDict:
    total = max(1, time.monotonic_ns() - began)
    out: JSONDict = {
        "total_duration": total,
        "load_duration": max(1, total // 10),
        "prompt_eval_count": turn.prompt_tokens,
    }
    if generation:
        out["prompt_eval_duration"] = max(1, total // 5)
        out["eval_count"] = turn.completion_tokens
        out["eval_duration"] = max(1, total - total // 5 - total // 10)
    return out


def _tools(body: JSONDict) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in body.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            specs.append(ToolSpec(fn["name"], params_of(fn.get("parameters"))))
    return tuple(specs)


def chat_turn(engine: OpenAICompatEngine, body: JSONDict) -> Turn:
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    texts = [str(m.get("content") or "") for m in messages]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    last_tool = messages and messages[-1].get("role") == "tool"
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    return plan_turn(
        engine.reply,
        prompt=users[-1] if users else "",
        prompt_tokens=sum(count_words(t) for t in texts),
        tools=_tools(body) if engine.call_tools else (),
        tool_result=texts[-1] if last_tool else None,
        limit=options.get("num_predict") if isinstance(options, dict) else None,
    )


def _stream(body: JSONDict) -> bool:
    return body.get("stream") is not False  # Ollama streams unless told not to


async def _answer(
    engine: OpenAICompatEngine,
    request: web.Request,
    model: str,
    stream: bool,
    lines: list[JSONDict],
    whole: JSONDict,
) -> web.StreamResponse:
    if stream:
        frames = [line(obj) for obj in lines]
        return await engine.run_stream(request, model, frames, {"Content-Type": NDJSON})
    return await engine.run_whole(
        request, model, lambda: engine.json_response(whole, content_type=GIN_JSON)
    )


def _model(engine: OpenAICompatEngine, request: web.Request, body: JSONDict) -> str | web.Response:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return engine.error_response(request, 400, "model is required")
    return engine.resolve_model(request, model, "chat")


async def handle_chat(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    began = time.monotonic_ns()
    body = await _body(engine, request)
    if isinstance(body, web.Response):
        return body
    model = _model(engine, request, body)
    if isinstance(model, web.Response):
        return model
    engine.on_generation(model)
    if not body.get("messages"):
        load = {"role": "assistant", "content": ""}
        return engine.json_response(
            {
                "model": model,
                "created_at": go_time(),
                "message": load,
                "done_reason": "load",
                "done": True,
            },
            content_type=GIN_JSON,
        )
    turn = chat_turn(engine, body)
    call = turn.call
    calls = None
    if call is not None:
        fn = {"index": 0, "name": call.name, "arguments": json.loads(call.arguments)}
        calls = [{"function": fn}]

    def say(content: str, tool_calls: Any = None) -> JSONDict:
        message: JSONDict = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return message

    head = {"model": model, "created_at": go_time()}
    lines = (
        [{**head, "message": say("", calls), "done": False}]
        if calls
        else [
            {**head, "message": say(p), "done": False}
            for p in split_pieces(turn.text, engine.chunks)
        ]
    )
    ending = {"done_reason": "length" if turn.finish == "length" else "stop", "done": True}
    last = {**head, "message": say(""), **ending, **_metrics(turn, began)}
    whole = {**head, "message": say(turn.text, calls), **ending, **_metrics(turn, began)}
    return await _answer(engine, request, model, _stream(body), [*lines, last], whole)


async def handle_generate(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    began = time.monotonic_ns()
    body = await _body(engine, request)
    if isinstance(body, web.Response):
        return body
    model = _model(engine, request, body)
    if isinstance(model, web.Response):
        return model
    engine.on_generation(model)
    prompt = body.get("prompt")
    head = {"model": model, "created_at": go_time()}
    if not prompt:
        return engine.json_response(
            {**head, "response": "", "done": True, "done_reason": "load"},
            content_type=GIN_JSON,
        )
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    texts = [str(body.get("system") or ""), str(prompt)]
    turn = plan_turn(
        engine.reply,
        prompt=str(prompt),
        prompt_tokens=sum(count_words(t) for t in texts),
        limit=options.get("num_predict") if isinstance(options, dict) else None,
    )
    pieces = split_pieces(turn.text, engine.chunks)
    lines = [{**head, "response": p, "done": False} for p in pieces]
    ending = {
        "done": True,
        "done_reason": "length" if turn.finish == "length" else "stop",
        "context": list(range(1, turn.total_tokens + 1)),
    }
    last = {**head, "response": "", **ending, **_metrics(turn, began)}
    whole = {**head, "response": turn.text, **ending, **_metrics(turn, began)}
    return await _answer(engine, request, model, _stream(body), [*lines, last], whole)


async def handle_embed(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    began = time.monotonic_ns()
    body = await _body(engine, request)
    if isinstance(body, web.Response):
        return body
    model = _model(engine, request, body)
    if isinstance(model, web.Response):
        return model
    value = body.get("input")
    texts = (
        [value] if isinstance(value, str) and value else value if isinstance(value, list) else []
    )
    if not all(isinstance(t, str) for t in texts):
        return engine.error_response(request, 400, "invalid input type")
    engine.on_generation(model)
    dims = body.get("dimensions")
    size = dims if isinstance(dims, int) and 0 < dims < engine.embedding_dims else None
    vectors = [fake_embedding(t, size or engine.embedding_dims) for t in texts]
    if not texts:
        return engine.json_response({"model": model, "embeddings": []}, content_type=GIN_JSON)
    turn = Turn("", None, sum(count_words(t) for t in texts), 0, "stop")
    answer = {"model": model, "embeddings": vectors, **_metrics(turn, began, generation=False)}
    return await engine.run_whole(
        request, model, lambda: engine.json_response(answer, content_type=GIN_JSON)
    )


async def handle_embeddings(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    body = await _body(engine, request)
    if isinstance(body, web.Response):
        return body
    model = _model(engine, request, body)
    if isinstance(model, web.Response):
        return model
    prompt = body.get("prompt")
    engine.on_generation(model)
    vector = (
        fake_embedding(prompt, engine.embedding_dims) if isinstance(prompt, str) and prompt else []
    )
    return await engine.run_whole(
        request,
        model,
        lambda: engine.json_response({"embedding": vector}, content_type=GIN_JSON),
    )


Handler = Callable[[OpenAICompatEngine, web.Request], Awaitable[web.StreamResponse]]


def add_native_routes(engine: OpenAICompatEngine, app: web.Application) -> None:
    routes: dict[str, Handler] = {
        "/api/chat": handle_chat,
        "/api/generate": handle_generate,
        "/api/embed": handle_embed,
        "/api/embeddings": handle_embeddings,
    }
    for path, handler in routes.items():
        app.router.add_post(path, functools.partial(handler, engine))
