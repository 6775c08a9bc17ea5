"""OpenAI's Responses API and Anthropic's Messages API, served natively by a fake engine.

Recent vLLM serves both beside chat completions (``vllm/entrypoints/openai/serving_responses.py``
and ``vllm/entrypoints/anthropic/``); :class:`~tests.fakes.vllm.FakeVLLM` mounts them with
``native_apis=("responses", "messages")``. Shapes follow the two APIs' references:

- ``POST /v1/responses``: a ``response`` object (``id`` ``resp_...``, ``object``,
  ``created_at``, ``status``, ``model``, ``output`` of ``message`` items with
  ``output_text`` parts or ``function_call`` items, ``usage`` in input/output tokens, and
  the request's settings echoed); streamed as ``event: <type>`` + ``data: <json>`` frames
  with a ``sequence_number``: ``response.created``, ``response.in_progress``, per item
  ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta``..., ``response.output_text.done``,
  ``response.content_part.done`` (a call: ``response.function_call_arguments.delta``...,
  ``.done``), ``response.output_item.done``, then ``response.completed``; no ``[DONE]``.
  Errors are OpenAI's ``{"error": {...}}``.
- ``POST /v1/messages``: a ``message`` (``id`` ``msg_...``, ``content`` of ``text`` or
  ``tool_use`` blocks, ``stop_reason`` ``end_turn`` / ``tool_use`` / ``max_tokens``,
  ``usage``); streamed as ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta`` (``text_delta`` / ``input_json_delta``)...,
  ``content_block_stop``, ``message_delta`` (stop reason, output tokens),
  ``message_stop``. Errors are ``{"type": "error", "error": {"type", "message"}}``.

What the model answers follows :mod:`._turn`; every generation takes a slot like a chat.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ._openai import JSONDict, OpenAICompatEngine, split_pieces, uuid_hex
from ._turn import ToolSpec, Turn, count_words, params_of, plan_turn

RESPONSES, MESSAGES = "responses", "messages"
NATIVE_APIS = frozenset({RESPONSES, MESSAGES})
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 404: "not_found_error", 500: "api_error"}


def sse_event(kind: str, data: JSONDict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- reading the requests ----------------------------------------------------------------


def _part_text(content: Any, kinds: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in kinds
        )
    return ""


def responses_turn(engine: OpenAICompatEngine, body: JSONDict) -> Turn:
    value = body.get("input")
    items = [{"role": "user", "content": value}] if isinstance(value, str) else value or []
    texts = [str(body.get("instructions") or "")]
    prompt, tool_result = "", None
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or ("message" if "role" in item else None)
        tool_result = None
        if kind == "message":
            text = _part_text(item.get("content"), ("input_text", "output_text"))
            texts.append(text)
            if item.get("role") == "user":
                prompt = text
        elif kind == "function_call_output":
            tool_result = _part_text(item.get("output"), ("input_text",))
            texts.append(tool_result)
    off = body.get("tool_choice") == "none" or not engine.call_tools
    tools = () if off else body.get("tools") or ()
    specs = tuple(
        ToolSpec(t["name"], params_of(t.get("parameters")))
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    )
    return plan_turn(
        engine.reply,
        prompt=prompt,
        prompt_tokens=sum(count_words(t) for t in texts),
        tools=specs,
        tool_result=tool_result,
        limit=body.get("max_output_tokens"),
    )


def messages_turn(engine: OpenAICompatEngine, body: JSONDict) -> Turn:
    texts = [_part_text(body.get("system"), ("text",))]
    prompt, tool_result = "", None
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        text = _part_text(content, ("text",))
        texts.append(text)
        tool_result = None
        if message.get("role") != "user":
            continue
        results = [
            b for b in content or () if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        if results and isinstance(content, list):
            tool_result = _part_text(results[-1].get("content"), ("text",))
            texts.append(tool_result)
        else:
            prompt = text
    choice = body.get("tool_choice")
    off = (isinstance(choice, dict) and choice.get("type") == "none") or not engine.call_tools
    offered = () if off else body.get("tools")
    specs = tuple(
        ToolSpec(t["name"], params_of(t.get("input_schema")))
        for t in offered or ()
        if isinstance(t, dict) and "input_schema" in t and isinstance(t.get("name"), str)
    )
    return plan_turn(
        engine.reply,
        prompt=prompt,
        prompt_tokens=sum(count_words(t) for t in texts),
        tools=specs,
        tool_result=tool_result,
        limit=body.get("max_tokens"),
        call_prefix="toolu_",
    )


# -- Responses -------------------------------------------------------------------------


class ResponsesRender:
    """One response's objects and events."""

    def __init__(self, body: JSONDict, model: str, turn: Turn) -> None:
        self.body, self.model, self.turn = body, model, turn
        self.id = f"resp_{uuid_hex()}"
        self.created = int(time.time())
        self.seq = 0

    def response(self, status: str, output: list[JSONDict]) -> JSONDict:
        b, t = self.body, self.turn
        done = status != "in_progress"
        incomplete = t.finish == "length" and done
        return {
            "id": self.id,
            "created_at": self.created,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": b.get("instructions"),
            "metadata": b.get("metadata"),
            "model": self.model,
            "object": "response",
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "temperature": b.get("temperature", 1.0),
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools") or [],
            "top_p": b.get("top_p", 1.0),
            "background": False,
            "max_output_tokens": b.get("max_output_tokens"),
            "max_tool_calls": None,
            "previous_response_id": None,
            "prompt": None,
            "reasoning": None,
            "service_tier": "auto",
            "status": "incomplete" if incomplete else status,
            "text": None,
            "top_logprobs": None,
            "truncation": "disabled",
            "usage": {
                "input_tokens": t.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": t.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": t.total_tokens,
            }
            if done
            else None,
            "user": None,
        }

    def item(self, done: bool, text: str | None = None) -> JSONDict:
        status = "completed" if done else "in_progress"
        call = self.turn.call
        if call is not None:
            return {
                "arguments": call.arguments if text is None else text,
                "call_id": call.call_id,
                "name": call.name,
                "type": "function_call",
                "id": f"fc_{self.id[5:]}",
                "status": status,
            }
        parts = [] if text is None else [self.part(text)]
        return {
            "id": f"msg_{self.id[5:]}",
            "content": parts,
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    @staticmethod
    def part(text: str) -> JSONDict:
        return {"annotations": [], "text": text, "type": "output_text", "logprobs": None}

    def whole(self) -> JSONDict:
        text = None if self.turn.call is not None else self.turn.text
        return self.response("completed", [self.item(True, text)])

    def event(self, kind: str, **fields: Any) -> bytes:
        frame = sse_event(kind, {**fields, "sequence_number": self.seq, "type": kind})
        self.seq += 1
        return frame

    def frames(self, chunks: int) -> list[bytes]:
        out = [self.event("response.created", response=self.response("in_progress", []))]
        out.append(self.event("response.in_progress", response=self.response("in_progress", [])))
        call, turn = self.turn.call, self.turn
        opened = self.item(False, "" if call is not None else None)
        out.append(self.event("response.output_item.added", item=opened, output_index=0))
        ids = {"item_id": opened["id"], "output_index": 0}
        if call is not None:
            for piece in call.argument_pieces(chunks):
                out.append(self.event("response.function_call_arguments.delta", delta=piece, **ids))
            out.append(
                self.event("response.function_call_arguments.done", arguments=call.arguments, **ids)
            )
            final = self.item(True)
        else:
            at = {**ids, "content_index": 0}
            out.append(self.event("response.content_part.added", part=self.part(""), **at))
            for piece in split_pieces(turn.text, chunks):
                out.append(self.event("response.output_text.delta", delta=piece, logprobs=[], **at))
            out.append(self.event("response.output_text.done", text=turn.text, logprobs=[], **at))
            out.append(self.event("response.content_part.done", part=self.part(turn.text), **at))
            final = self.item(True, turn.text)
        out.append(self.event("response.output_item.done", item=final, output_index=0))
        whole = self.response("completed", [final])
        kind = "response.incomplete" if whole["status"] == "incomplete" else "response.completed"
        out.append(self.event(kind, response=whole))
        return out


# -- Messages --------------------------------------------------------------------------

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class MessagesRender:
    def __init__(self, model: str, turn: Turn) -> None:
        self.model, self.turn = model, turn
        self.id = f"msg_{uuid_hex()}"

    def block(self, done: bool) -> JSONDict:
        call = self.turn.call
        if call is not None:
            args = json.loads(call.arguments) if done else {}
            return {"type": "tool_use", "id": call.call_id, "name": call.name, "input": args}
        return {"type": "text", "text": self.turn.text if done else ""}

    def message(self, done: bool) -> JSONDict:
        t = self.turn
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [self.block(True)] if done else [],
            "stop_reason": _STOP[t.finish] if done else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": t.prompt_tokens,
                "output_tokens": t.completion_tokens if done else 0,
            },
        }

    def frames(self, chunks: int) -> list[bytes]:
        t = self.turn
        out = [
            sse_event("message_start", {"type": "message_start", "message": self.message(False)})
        ]
        start = {"type": "content_block_start", "index": 0, "content_block": self.block(False)}
        out.append(sse_event("content_block_start", start))
        out.append(sse_event("ping", {"type": "ping"}))
        if t.call is not None:
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in t.call.argument_pieces(chunks)
            ]
        else:
            deltas = [{"type": "text_delta", "text": p} for p in split_pieces(t.text, chunks)]
        for delta in deltas:
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            out.append(sse_event("content_block_delta", event))
        out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        ending = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[t.finish], "stop_sequence": None},
            "usage": {"output_tokens": t.completion_tokens},
        }
        out.append(sse_event("message_delta", ending))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        return out


def anthropic_error(engine: OpenAICompatEngine, status: int, message: str) -> web.Response:
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return engine.json_body(body, status)


# -- handlers --------------------------------------------------------------------------


async def handle_responses(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    body = await engine.read_json(request)
    if isinstance(body, web.Response):
        return body
    if body.get("input") is None:
        return engine.error_response(request, 400, "Field required: input")
    model = engine.resolve_model(request, body.get("model"), "chat")
    if isinstance(model, web.Response):
        return model
    engine.on_generation(model)
    render = ResponsesRender(body, model, responses_turn(engine, body))
    if body.get("stream") is True:
        return await engine.run_stream(request, model, render.frames(engine.chunks))
    return await engine.run_whole(request, model, lambda: engine.json_body(render.whole()))


async def handle_messages(engine: OpenAICompatEngine, request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return anthropic_error(engine, 400, f"invalid JSON body: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return anthropic_error(engine, 400, "messages: Field required")
    if not isinstance(body.get("max_tokens"), int):
        return anthropic_error(engine, 400, "max_tokens: Field required")
    model = engine.resolve_model(request, body.get("model"), "chat")
    if isinstance(model, web.Response):
        message = json.loads(model.text or "{}").get("error", {}).get("message", "not found")
        return anthropic_error(engine, model.status, str(message))
    engine.on_generation(model)
    render = MessagesRender(model, messages_turn(engine, body))
    if body.get("stream") is True:
        return await engine.run_stream(request, model, render.frames(engine.chunks))
    return await engine.run_whole(request, model, lambda: engine.json_body(render.message(True)))


async def handle_count_tokens(
    engine: OpenAICompatEngine, request: web.Request
) -> web.StreamResponse:
    """Anthropic's ``/v1/messages/count_tokens`` (served with ``/v1/messages`` by vLLM and
    llama.cpp): a Messages body without ``max_tokens``; ``{"input_tokens"}``, counted as
    its Messages answers count them."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return anthropic_error(engine, 400, f"invalid JSON body: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return anthropic_error(engine, 400, "messages: Field required")
    model = engine.resolve_model(request, body.get("model"), "chat")
    if isinstance(model, web.Response):
        message = json.loads(model.text or "{}").get("error", {}).get("message", "not found")
        return anthropic_error(engine, model.status, str(message))
    turn = messages_turn(engine, {**body, "max_tokens": 1})
    return web.json_response({"input_tokens": turn.prompt_tokens})


def add_native_routes(
    engine: OpenAICompatEngine, app: web.Application, apis: frozenset[str]
) -> None:
    """Mount the native APIs named in ``apis`` (``responses``, ``messages``) on ``app``."""
    unknown = apis - NATIVE_APIS
    if unknown:
        raise ValueError(f"no native fake for {sorted(unknown)}; known: {sorted(NATIVE_APIS)}")

    async def responses(request: web.Request) -> web.StreamResponse:
        return await handle_responses(engine, request)

    async def messages(request: web.Request) -> web.StreamResponse:
        return await handle_messages(engine, request)

    if RESPONSES in apis:
        app.router.add_post("/v1/responses", responses)

    async def count_tokens(request: web.Request) -> web.StreamResponse:
        return await handle_count_tokens(engine, request)

    if MESSAGES in apis:
        app.router.add_post("/v1/messages", messages)
        app.router.add_post("/v1/messages/count_tokens", count_tokens)
