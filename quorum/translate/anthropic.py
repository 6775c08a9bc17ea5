"""Anthropic's Messages API (``POST /v1/messages``) to and from chat completions.

In: :func:`chat_request` reads a Messages request (``MessagesRequest.chat`` is
the chat-completions body to send).

- ``system`` (a string or text blocks) becomes the first system message.
- ``messages`` hold strings or content blocks: ``text``, ``image`` (base64 or
  URL) and ``tool_result`` from the user; ``text``, ``tool_use`` and
  ``thinking`` (dropped: engines do not take thoughts back) from the
  assistant. A user turn's tool results come first, as ``tool`` messages,
  then the rest of the turn (and any images the tools returned) as one user
  message; an errored result says so in its text.
- ``tools`` with an ``input_schema`` become function tools; tools Anthropic
  defines and runs itself (web search, code execution, ...) cannot run on a
  local engine and are left out. ``tool_choice`` ``auto``/``any``/``tool``/
  ``none`` and ``disable_parallel_tool_use`` carry over, as do ``max_tokens``
  (required), ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``,
  ``metadata.user_id``, ``output_config.format`` and ``stream``.

Out: :func:`answer` turns a whole chat answer into a ``message``: ``thinking``,
``text`` and ``tool_use`` blocks, ``stop_reason`` ``end_turn``,
``max_tokens``, ``tool_use`` or ``stop_sequence`` (when the engine says which
one matched), and ``usage``. :func:`error_body` shapes any error the node
answers on this route. The stream goes through
:class:`~.anthropic_stream.AnthropicStream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quorum.errors import UpstreamFailed

from .chat import CUT, Finish, parse_answer
from .common import (
    Counts,
    JsonObject,
    arguments_object,
    as_object,
    at,
    bad,
    body_object,
    dumps,
    get_bool,
    get_int,
    get_list,
    get_number,
    get_object,
    get_str,
    id_tail,
    need_str,
    put,
    stop_list,
)

PATH = "/v1/chat/completions"
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A translated Messages request: ``chat`` goes to the engine's ``PATH``."""

    model: str
    stream: bool
    chat: JsonObject
    stop_sequences: tuple[str, ...] = ()


def chat_request(raw: Any) -> MessagesRequest:
    """The chat-completions request for a Messages request (InvalidRequest names a field)."""
    body = body_object(raw)
    model = need_str(body, "model")
    max_tokens = get_int(body, "max_tokens", minimum=1)
    if max_tokens is None:
        bad("max_tokens", "is required")
    messages = _system(body.get("system"))
    turns = get_list(body, "messages")
    if not turns:
        bad("messages", "is required and must hold at least one message")
    for i, turn in enumerate(turns):
        _turn(as_object(turn, at("messages", i)), at("messages", i), messages)
    chat: JsonObject = {"model": model, "messages": messages, "max_tokens": max_tokens}
    tools = _tools(body)
    if tools:
        chat["tools"] = tools
        _tool_choice(body, tools, chat)
    stops = stop_list(body.get("stop_sequences"), "stop_sequences")
    put(chat, "stop", stops)
    put(chat, "temperature", get_number(body, "temperature"))
    put(chat, "top_p", get_number(body, "top_p"))
    put(chat, "top_k", get_int(body, "top_k"))
    metadata = get_object(body, "metadata") or {}
    put(chat, "user", get_str(metadata, "user_id", "metadata"))
    config = get_object(body, "output_config") or {}
    put(chat, "reasoning_effort", _EFFORT.get(get_str(config, "effort", "output_config") or ""))
    if (fmt := get_object(config, "format", "output_config")) is not None:
        schema = get_object(fmt, "schema", "output_config.format")
        if fmt.get("type") != "json_schema" or schema is None:
            bad("output_config.format", "must be {type: json_schema, schema: {...}}")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    stream = bool(get_bool(body, "stream"))
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return MessagesRequest(model, stream, chat, tuple(stops or ()))


def _system(system: Any) -> list[JsonObject]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        bad("system", "must be a string or an array of text blocks")
    texts = []
    for i, raw in enumerate(system):
        block = as_object(raw, at("system", i))
        if block.get("type") != "text":
            bad(at(at("system", i), "type"), "must be 'text'")
        texts.append(need_str(block, "text", at("system", i)))
    return [{"role": "system", "content": "\n".join(texts)}]


def _turn(turn: JsonObject, path: str, messages: list[JsonObject]) -> None:
    role = need_str(turn, "role", path)
    if role not in ("user", "assistant"):
        bad(at(path, "role"), f"must be 'user' or 'assistant', not '{role}'")
    content = turn.get("content")
    cpath = at(path, "content")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        return
    if not isinstance(content, list):
        bad(cpath, "must be a string or an array of content blocks")
    blocks = [as_object(b, at(cpath, i)) for i, b in enumerate(content)]
    if role == "assistant":
        _assistant(blocks, cpath, messages)
    else:
        _user(blocks, cpath, messages)


def _assistant(blocks: list[JsonObject], path: str, messages: list[JsonObject]) -> None:
    texts: list[str] = []
    calls: list[JsonObject] = []
    for i, block in enumerate(blocks):
        bpath = at(path, i)
        kind = block.get("type")
        if kind == "text":
            texts.append(need_str(block, "text", bpath))
        elif kind == "tool_use":
            tool_input = get_object(block, "input", bpath) or {}
            calls.append(
                {
                    "id": need_str(block, "id", bpath),
                    "type": "function",
                    "function": {
                        "name": need_str(block, "name", bpath),
                        "arguments": dumps(tool_input),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the engine's earlier thoughts: chat engines do not take them back
        else:
            bad(at(bpath, "type"), f"'{kind}' blocks are not supported in assistant turns")
    message: JsonObject = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    messages.append(message)


def _image(block: JsonObject, path: str) -> JsonObject:
    source = get_object(block, "source", path)
    if source is None:
        bad(at(path, "source"), "is required")
    spath = at(path, "source")
    kind = source.get("type")
    if kind == "base64":
        media = need_str(source, "media_type", spath)
        url = f"data:{media};base64,{need_str(source, 'data', spath)}"
    elif kind == "url":
        url = need_str(source, "url", spath)
    else:
        bad(at(spath, "type"), f"'{kind}' image sources are not supported (base64 and url are)")
    return {"type": "image_url", "image_url": {"url": url}}


def _user(blocks: list[JsonObject], path: str, messages: list[JsonObject]) -> None:
    parts: list[JsonObject] = []
    images: list[JsonObject] = []  # returned by tools: shown to the model after the results
    for i, block in enumerate(blocks):
        bpath = at(path, i)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": need_str(block, "text", bpath)})
        elif kind == "image":
            parts.append(_image(block, bpath))
        elif kind == "tool_result":
            messages.append(_tool_result(block, bpath, images))
        else:
            bad(
                at(bpath, "type"),
                f"'{kind}' blocks are not supported (text, image, tool_result are)",
            )
    parts = images + parts
    if not parts:
        return
    if all(p["type"] == "text" for p in parts):
        messages.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
    else:
        messages.append({"role": "user", "content": parts})


def _tool_result(block: JsonObject, path: str, images: list[JsonObject]) -> JsonObject:
    content = block.get("content")
    cpath = at(path, "content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for i, raw in enumerate(content):
            part = as_object(raw, at(cpath, i))
            if part.get("type") == "text":
                texts.append(need_str(part, "text", at(cpath, i)))
            elif part.get("type") == "image":
                images.append(_image(part, at(cpath, i)))
            else:
                bad(at(at(cpath, i), "type"), "tool results may hold text and images only")
    elif content is not None:
        bad(cpath, "must be a string or an array of blocks")
    text = "\n".join(texts)
    if get_bool(block, "is_error", path):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": need_str(block, "tool_use_id", path), "content": text}


def _tools(body: JsonObject) -> list[JsonObject]:
    tools: list[JsonObject] = []
    for i, raw in enumerate(get_list(body, "tools") or ()):
        path = at("tools", i)
        tool = as_object(raw, path)
        if tool.get("type") not in (None, "custom"):
            continue  # a tool Anthropic defines and runs itself: nothing here can run it
        fn: JsonObject = {"name": need_str(tool, "name", path)}
        put(fn, "description", get_str(tool, "description", path))
        schema = get_object(tool, "input_schema", path)
        if schema is None:
            bad(at(path, "input_schema"), "is required")
        fn["parameters"] = schema
        tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(body: JsonObject, tools: list[JsonObject], chat: JsonObject) -> None:
    choice = get_object(body, "tool_choice")
    if choice is None:
        return
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        name = need_str(choice, "name", "tool_choice")
        if name not in {t["function"]["name"] for t in tools}:
            bad("tool_choice.name", f"'{name}' is not one of the request's tools")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        bad("tool_choice.type", f"unknown tool choice '{kind}'")
    if get_bool(choice, "disable_parallel_tool_use", "tool_choice"):
        chat["parallel_tool_calls"] = False


# --- out ------------------------------------------------------------------------------


def stop_reason(finish: Finish, request: MessagesRequest) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for a chat finish."""
    if finish.reason == "length":
        return "max_tokens", None
    if finish.reason == "tool_calls":
        return "tool_use", None
    if finish.reason == "content_filter":
        return "refusal", None
    if finish.stop_sequence is not None and finish.stop_sequence in request.stop_sequences:
        return "stop_sequence", finish.stop_sequence
    return "end_turn", None


def usage_object(counts: Counts | None) -> JsonObject:
    counts = counts or Counts()
    # Anthropic counts cache reads apart from input_tokens; OpenAI counts them in.
    usage: JsonObject = {
        "input_tokens": counts.input - counts.cached,
        "output_tokens": counts.output,
    }
    if counts.cached:
        usage["cache_read_input_tokens"] = counts.cached
        usage["cache_creation_input_tokens"] = 0
    return usage


def tool_input(arguments: str, name: str) -> JsonObject:
    """A tool call's arguments as the object ``tool_use.input`` must be."""
    value = arguments_object(arguments)
    if value is None:
        raise UpstreamFailed(
            f"The engine's call of tool '{name}' has arguments that are not a JSON object."
        )
    return value


def new_message_id(chat_id: str | None = None) -> str:
    """``msg_...``, from the engine's answer id when it has one."""
    return f"msg_{id_tail(chat_id)}"


def answer(request: MessagesRequest, chat: Any, *, message_id: str | None = None) -> JsonObject:
    """The ``message`` object for the engine's whole chat answer."""
    parsed = parse_answer(chat)
    if parsed.finish is None:
        raise UpstreamFailed(CUT, code="answer_cut")
    content: list[JsonObject] = []
    if parsed.reasoning:
        content.append({"type": "thinking", "thinking": parsed.reasoning, "signature": ""})
    if parsed.text:
        content.append({"type": "text", "text": parsed.text})
    for call in parsed.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(call.arguments, call.name),
            }
        )
    reason, sequence = stop_reason(parsed.finish, request)
    return {
        "id": message_id or new_message_id(parsed.id),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_object(parsed.usage),
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> JsonObject:
    """Anthropic's error shape for an HTTP status and a message."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
