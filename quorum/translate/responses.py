"""OpenAI's Responses API (``POST /v1/responses``) to and from chat completions.

In: :func:`chat_request` reads a Responses request and gives the chat-completions
body to send (``ResponsesRequest.chat``), plus what the answer must repeat.

- ``input`` is a string (one user message) or a list of items: messages
  (``input_text``, ``output_text``, ``input_image`` parts; ``developer`` and
  ``system`` become system messages), ``function_call`` items (assistant
  ``tool_calls``), ``function_call_output`` items (``tool`` messages; images
  in an output follow as a user message) and ``reasoning`` items (dropped:
  engines do not take thoughts back).
- ``instructions`` becomes the first system message; function ``tools`` take
  chat's nested shape; tools OpenAI hosts (web search, file search, computer,
  code interpreter, MCP, ...) cannot run on a local engine and are left out;
  ``tool_choice``, ``max_output_tokens`` (``max_tokens``), ``temperature``,
  ``top_p``, ``parallel_tool_calls``, ``reasoning.effort``, ``text.format``
  (``response_format``) and ``stream`` (with usage asked for) carry over.
- The node is stateless: ``previous_response_id``, ``conversation``, stored
  prompts, item references and ``background`` are refused with a message that
  says so; ``store`` is accepted and answered as ``false``.

Out: :func:`answer` turns a whole chat answer into a ``response`` object:
a ``reasoning`` item when the engine thought aloud, a ``message`` item with
``output_text``, ``function_call`` items; ``usage`` in input/output tokens;
``status`` ``incomplete`` (``max_output_tokens``) when the engine ran out of
tokens. The stream goes through :class:`~.responses_stream.ResponsesStream`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from quorum.errors import UpstreamFailed

from .chat import CUT, ChatAnswer, parse_answer
from .common import (
    JsonObject,
    as_object,
    at,
    bad,
    body_object,
    get_bool,
    get_int,
    get_list,
    get_number,
    get_object,
    get_str,
    need_str,
    new_id,
    put,
)
from .responses_items import (
    call_item,
    item_id,
    message_item,
    reasoning_item,
    response_object,
    status_of,
    usage_object,
)

PATH = "/v1/chat/completions"
STATELESS = (
    "this node stores no responses, so a request cannot refer to an earlier one: "
    "send the whole conversation in 'input'"
)
_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A translated Responses request: ``chat`` goes to the engine's ``PATH``."""

    model: str
    stream: bool
    chat: JsonObject
    echo: JsonObject  # the request's settings, repeated in every response object


def chat_request(raw: Any) -> ResponsesRequest:
    """The chat-completions request for a Responses request (InvalidRequest names a field)."""
    body = body_object(raw)
    for key in ("previous_response_id", "conversation", "prompt"):
        if body.get(key) is not None:
            bad(key, STATELESS)
    if get_bool(body, "background"):
        bad("background", "this node runs responses only in the foreground")
    model = need_str(body, "model")
    stream = bool(get_bool(body, "stream"))
    chat: JsonObject = {"model": model, "messages": _messages(body)}
    tools, echo_tools = _tools(body)
    choice = body.get("tool_choice")
    if tools:
        tools, chat_choice = _tool_choice(choice, tools)
        chat["tools"] = tools
        put(chat, "tool_choice", chat_choice)
    elif isinstance(choice, dict) or choice == "required":
        bad("tool_choice", "names a tool, but the request has no function tools")
    put(chat, "max_tokens", get_int(body, "max_output_tokens", minimum=1))
    put(chat, "temperature", get_number(body, "temperature"))
    put(chat, "top_p", get_number(body, "top_p"))
    put(chat, "parallel_tool_calls", get_bool(body, "parallel_tool_calls") if tools else None)
    put(chat, "user", get_str(body, "safety_identifier") or get_str(body, "user"))
    reasoning = get_object(body, "reasoning") or {}
    effort = get_str(reasoning, "effort", "reasoning")
    put(chat, "reasoning_effort", _EFFORT.get(effort or ""))
    text = get_object(body, "text") or {}
    fmt = get_object(text, "format", "text")
    put(chat, "response_format", _response_format(fmt))
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    echo: JsonObject = {
        "instructions": get_str(body, "instructions"),
        "max_output_tokens": chat.get("max_tokens"),
        "metadata": get_object(body, "metadata") or {},
        "parallel_tool_calls": get_bool(body, "parallel_tool_calls") is not False,
        "reasoning": {"effort": effort, "summary": None},
        "temperature": chat.get("temperature", 1.0),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": choice if choice is not None else "auto",
        "tools": echo_tools,
        "top_p": chat.get("top_p", 1.0),
    }
    return ResponsesRequest(model=model, stream=stream, chat=chat, echo=echo)


def _messages(body: JsonObject) -> list[JsonObject]:
    messages: list[JsonObject] = []
    if instructions := get_str(body, "instructions"):
        messages.append({"role": "system", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        images: list[JsonObject] = []  # from tool outputs, sent once the outputs end
        for i, item in enumerate(value):
            path = at("input", i)
            item = as_object(item, path)
            kind = item.get("type") or ("message" if "role" in item else None)
            if kind != "function_call_output" and images:
                messages.append({"role": "user", "content": images})
                images = []
            _item(item, kind, path, messages, images)
        if images:
            messages.append({"role": "user", "content": images})
    elif value is None:
        bad("input", "is required")
    else:
        bad("input", "must be a string or an array of input items")
    if not any(m["role"] != "system" for m in messages):
        bad("input", "holds no message to answer")
    return messages


def _item(
    item: JsonObject, kind: Any, path: str, messages: list[JsonObject], images: list[JsonObject]
) -> None:
    if kind == "message":
        role = need_str(item, "role", path)
        content = item.get("content")
        cpath = at(path, "content")
        if role in ("system", "developer"):
            messages.append({"role": "system", "content": _text(content, cpath)})
        elif role == "assistant":
            messages.append({"role": "assistant", "content": _text(content, cpath)})
        elif role == "user":
            messages.append({"role": "user", "content": _user_content(content, cpath)})
        else:
            bad(at(path, "role"), f"unknown role '{role}'")
    elif kind == "function_call":
        call = {
            "id": need_str(item, "call_id", path),
            "type": "function",
            "function": {
                "name": need_str(item, "name", path),
                "arguments": get_str(item, "arguments", path) or "{}",
            },
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        call_id = get_str(item, "call_id", path) or _unanswered(messages)
        if call_id is None:
            bad(at(path, "call_id"), "is required (no earlier function_call is left unanswered)")
        output = item.get("output")
        opath = at(path, "output")
        if isinstance(output, list):
            parts = _parts(output, opath)
            text = "\n".join(p["text"] for p in parts if p["type"] == "text")
            images.extend(p for p in parts if p["type"] == "image_url")
        elif isinstance(output, str):
            text = output
        else:
            bad(opath, "must be a string or an array of content parts")
        messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
    elif kind == "reasoning":
        return  # the engine's earlier thoughts: chat engines do not take them back
    elif kind == "item_reference":
        bad(path, STATELESS)
    else:
        bad(
            at(path, "type"),
            f"'{kind}' items are not supported here "
            "(message, function_call, function_call_output and reasoning are)",
        )


def _unanswered(messages: list[JsonObject]) -> str | None:
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if call["id"] not in answered:
                return str(call["id"])
    return None


def _parts(content: list[Any], path: str) -> list[JsonObject]:
    parts: list[JsonObject] = []
    for i, raw in enumerate(content):
        ppath = at(path, i)
        part = as_object(raw, ppath)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": need_str(part, "text", ppath)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": need_str(part, "refusal", ppath)})
        elif kind == "input_image":
            url = get_str(part, "image_url", ppath)
            if url is None:
                bad(
                    at(ppath, "image_url"),
                    "is required: uploaded files (file_id) are not stored here",
                )
            image: JsonObject = {"url": url}
            if (detail := get_str(part, "detail", ppath)) and detail != "auto":
                image["detail"] = detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            bad(at(ppath, "type"), f"'{kind}' content is not supported (text and images are)")
    return parts


def _text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        bad(path, "must be a string or an array of content parts")
    parts = _parts(content, path)
    if any(p["type"] != "text" for p in parts):
        bad(path, "may hold only text here")
    return "\n".join(p["text"] for p in parts)


def _user_content(content: Any, path: str) -> str | list[JsonObject]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        bad(path, "must be a string or an array of content parts")
    parts = _parts(content, path)
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)  # plain text suits every chat template
    return parts


def _tools(body: JsonObject) -> tuple[list[JsonObject], list[JsonObject]]:
    chat: list[JsonObject] = []
    echo: list[JsonObject] = []
    for i, raw in enumerate(get_list(body, "tools") or ()):
        path = at("tools", i)
        tool = as_object(raw, path)
        if need_str(tool, "type", path) != "function":
            continue  # a tool OpenAI hosts: nothing here can run it
        fn: JsonObject = {"name": need_str(tool, "name", path)}
        put(fn, "description", get_str(tool, "description", path))
        fn["parameters"] = get_object(tool, "parameters", path) or {
            "type": "object",
            "properties": {},
        }
        put(fn, "strict", get_bool(tool, "strict", path))
        chat.append({"type": "function", "function": fn})
        echo.append({"type": "function", "description": None, "strict": None, **tool})
    return chat, echo


def _tool_choice(choice: Any, tools: list[JsonObject]) -> tuple[list[JsonObject], Any]:
    names = {t["function"]["name"] for t in tools}
    if choice is None or choice in ("auto", "none", "required"):
        return tools, choice
    obj = as_object(choice, "tool_choice")
    kind = obj.get("type")
    if kind == "function":
        name = need_str(obj, "name", "tool_choice")
        if name not in names:
            bad("tool_choice.name", f"'{name}' is not one of the request's function tools")
        return tools, {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        mode = get_str(obj, "mode", "tool_choice") or "auto"
        allowed = {
            t.get("name")
            for t in get_list(obj, "tools", "tool_choice") or ()
            if isinstance(t, dict)
        }
        kept = [t for t in tools if t["function"]["name"] in allowed]
        if not kept:
            bad("tool_choice.tools", "allows none of the request's function tools")
        return kept, mode
    bad("tool_choice", f"'{kind}' names a tool OpenAI hosts; only function tools run here")


def _response_format(fmt: JsonObject | None) -> JsonObject | None:
    if fmt is None or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema: JsonObject = {
            "name": get_str(fmt, "name", "text.format") or "response",
            "schema": get_object(fmt, "schema", "text.format") or {},
        }
        put(schema, "description", get_str(fmt, "description", "text.format"))
        put(schema, "strict", get_bool(fmt, "strict", "text.format"))
        return {"type": "json_schema", "json_schema": schema}
    bad("text.format.type", f"unknown format '{fmt.get('type')}'")


# --- out ---------------------------------------------------------------------------


def answer(
    request: ResponsesRequest,
    chat: Any,
    *,
    response_id: str | None = None,
    created_at: float | None = None,
    completed_at: float | None = None,
) -> JsonObject:
    """The ``response`` object for the engine's whole chat answer.

    ``created_at`` is when the request came (wall-clock seconds), ``completed_at``
    when the answer did (now, by default).
    """
    parsed: ChatAnswer = parse_answer(chat)
    if parsed.finish is None:
        raise UpstreamFailed(CUT, code="answer_cut")
    rid = response_id or new_id("resp_")
    status, incomplete = status_of(parsed.finish.reason)
    output: list[JsonObject] = []
    if parsed.reasoning:
        output.append(reasoning_item(item_id(rid, "rs"), parsed.reasoning))
    if parsed.text or not parsed.tool_calls:
        output.append(message_item(item_id(rid, "msg"), parsed.text, status))
    for n, call in enumerate(parsed.tool_calls):
        output.append(
            call_item(item_id(rid, "fc", n), call.id, call.name, call.arguments, "completed")
        )
    done = time.time() if completed_at is None else completed_at
    return response_object(
        request.model,
        request.echo,
        rid,
        int(done if created_at is None else created_at),
        status,
        output,
        usage=usage_object(parsed.usage),
        incomplete=incomplete,
        completed_at=int(done) if status == "completed" else None,
    )
