"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``) to and from the OpenAI shapes engines serve.

In: each ``*_request`` reads an Ollama request and gives an
:class:`OllamaRequest`: the engine ``path`` and OpenAI-shaped ``body`` to send.

- ``/api/chat`` -> chat completions: ``messages`` (``images`` as base64 become
  image parts; assistant ``tool_calls`` with object arguments get ids, and
  ``tool`` messages find their call by ``tool_call_id``, ``tool_name`` or
  order), ``tools``, ``format`` (``"json"`` or a schema), ``options``
  (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``,
  ``num_predict`` -> ``max_tokens``, penalties), ``think`` as an effort, and
  ``stream`` (true unless false). ``keep_alive`` and ``num_ctx`` are the
  engine's business and are ignored.
- ``/api/generate`` -> chat completions (``system`` and ``prompt`` as two
  messages, templated by the engine, as Ollama does), or text completions
  when ``raw`` is true or a ``suffix`` is given.
- ``/api/embed`` (``input``: a string or a list) and the older
  ``/api/embeddings`` (``prompt``) -> embeddings.
- A request with nothing to generate (no messages, an empty prompt, no input)
  only loads the model in Ollama: ``load_only`` is set and
  :func:`load_answer` is the whole answer, without asking the engine.

Out: :func:`answer` shapes the engine's whole answer with Ollama's field
names: ``created_at`` in RFC 3339 with nanoseconds, ``done_reason``,
``prompt_eval_count``/``eval_count``, and durations in nanoseconds, taken from
llama.cpp's ``timings`` when the engine gives them and from the elapsed time
the proxy measured otherwise (an unknown duration is left out, as Ollama
leaves out zero ones). Streams go through :class:`~.ollama_stream.OllamaStream`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quorum.errors import UpstreamFailed

from .chat import CUT, ChatAnswer, Finish, parse_answer
from .common import (
    Counts,
    JsonObject,
    arguments_object,
    as_object,
    at,
    bad,
    body_object,
    counts_from,
    dumps,
    get_bool,
    get_int,
    get_list,
    get_number,
    get_object,
    get_str,
    need_str,
    put,
    stop_list,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
_IMAGE_MAGIC = {
    "iVBOR": "image/png",
    "/9j/": "image/jpeg",
    "R0lGOD": "image/gif",
    "UklGR": "image/webp",
}
_NUMBERS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class OllamaRequest:
    """A translated Ollama request: ``body`` goes to the engine's ``path``."""

    kind: str  # chat | generate | embed | embeddings
    model: str
    stream: bool
    path: str
    body: JsonObject
    load_only: bool = False  # nothing to generate: answer with load_answer()


def rfc3339(ns: int) -> str:
    """A wall-clock time in nanoseconds as Ollama writes it (``...T19:22:45.499127455Z``)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def error_body(message: str) -> JsonObject:
    """Ollama's error shape."""
    return {"error": message}


def _stream(body: JsonObject) -> bool:
    return get_bool(body, "stream") is not False  # Ollama streams unless told not to


def _options(body: JsonObject, chat: JsonObject) -> None:
    options = get_object(body, "options") or {}
    for key in _NUMBERS:
        put(chat, key, get_number(options, key, "options"))
    put(chat, "top_k", get_int(options, "top_k", "options"))
    put(chat, "seed", get_int(options, "seed", "options"))
    predict = get_int(options, "num_predict", "options")
    if predict is not None and predict > 0:  # -1 and -2 mean "no limit" to Ollama
        chat["max_tokens"] = predict
    put(chat, "stop", stop_list(options.get("stop"), "options.stop"))
    fmt = body.get("format")
    if fmt == "json":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": fmt, "strict": True},
        }
    elif fmt not in (None, ""):
        bad("format", 'must be "json" or a JSON schema object')
    think = body.get("think")
    if isinstance(think, str) and think in ("low", "medium", "high"):
        chat["reasoning_effort"] = think


def _image(value: Any, path: str) -> JsonObject:
    if not isinstance(value, str) or not value:
        bad(path, "must be a base64-encoded image")
    if not value.startswith("data:"):
        media = next((m for head, m in _IMAGE_MAGIC.items() if value.startswith(head)), "image/png")
        value = f"data:{media};base64,{value}"
    return {"type": "image_url", "image_url": {"url": value}}


def _content(text: str, images: list[Any] | None, path: str) -> str | list[JsonObject]:
    if not images:
        return text
    parts: list[JsonObject] = [{"type": "text", "text": text}] if text else []
    return parts + [_image(img, at(at(path, "images"), i)) for i, img in enumerate(images)]


def _tool_calls(raw: list[Any], path: str, n: int) -> list[JsonObject]:
    calls = []
    for j, item in enumerate(raw):
        cpath = at(at(path, "tool_calls"), j)
        fn = get_object(as_object(item, cpath), "function", cpath)
        if fn is None:
            bad(at(cpath, "function"), "is required")
        args = fn.get("arguments")
        text = args if isinstance(args, str) else dumps(args if args is not None else {})
        call_id = get_str(item, "id", cpath) or f"call_{n}_{j}"
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": need_str(fn, "name", at(cpath, "function")),
                    "arguments": text,
                },
            }
        )
    return calls


def _answered(messages: list[JsonObject], name: str | None) -> str | None:
    """The id of the earliest call not yet answered (of this tool, when named)."""
    done = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    calls = [c for m in messages for c in m.get("tool_calls") or () if c["id"] not in done]
    named = [c for c in calls if c["function"]["name"] == name]
    found = (named or calls or [None])[0]
    return None if found is None else str(found["id"])


def chat_request(raw: Any) -> OllamaRequest:
    """``/api/chat`` -> chat completions."""
    body = body_object(raw)
    model = need_str(body, "model")
    messages: list[JsonObject] = []
    for i, item in enumerate(get_list(body, "messages") or ()):
        path = at("messages", i)
        msg = as_object(item, path)
        role = need_str(msg, "role", path)
        text = get_str(msg, "content", path) or ""
        images = get_list(msg, "images", path)
        if role in ("system", "user"):
            messages.append({"role": role, "content": _content(text, images, path)})
        elif role == "assistant":
            out: JsonObject = {"role": "assistant", "content": text}
            if calls := get_list(msg, "tool_calls", path):
                out["tool_calls"] = _tool_calls(calls, path, i)
            messages.append(out)
        elif role == "tool":
            call_id = get_str(msg, "tool_call_id", path) or _answered(
                messages, get_str(msg, "tool_name", path)
            )
            if call_id is None:
                bad(path, "a tool message must follow an assistant message with tool_calls")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            bad(at(path, "role"), f"unknown role '{role}'")
    chat: JsonObject = {"model": model, "messages": messages}
    tools = get_list(body, "tools")
    for i, tool in enumerate(tools or ()):
        fn = get_object(as_object(tool, at("tools", i)), "function", at("tools", i))
        if fn is None:
            bad(at(at("tools", i), "function"), "is required")
        need_str(fn, "name", at(at("tools", i), "function"))
    put(chat, "tools", tools or None)
    _options(body, chat)
    stream = _stream(body)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    load = not messages
    return OllamaRequest("chat", model, stream and not load, CHAT, chat, load)


def generate_request(raw: Any) -> OllamaRequest:
    """``/api/generate`` -> chat completions, or text completions when raw or with a suffix."""
    body = body_object(raw)
    model = need_str(body, "model")
    prompt = get_str(body, "prompt") or ""
    suffix = get_str(body, "suffix")
    images = get_list(body, "images")
    stream = _stream(body)
    if get_bool(body, "raw") or suffix:
        if images:
            bad("images", "cannot be sent with raw or suffix (the prompt is sent as text)")
        out: JsonObject = {"model": model, "prompt": prompt}
        put(out, "suffix", suffix)
        path = COMPLETIONS
    else:
        messages: list[JsonObject] = []
        if system := get_str(body, "system"):
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": _content(prompt, images, "")})
        out = {"model": model, "messages": messages}
        path = CHAT
    _options(body, out)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    load = not prompt and not suffix and not images
    return OllamaRequest("generate", model, stream and not load, path, out, load)


def embed_request(raw: Any) -> OllamaRequest:
    """``/api/embed`` -> embeddings."""
    body = body_object(raw)
    model = need_str(body, "model")
    value = body.get("input")
    if isinstance(value, str):
        texts = [value] if value else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        texts = list(value)
    elif value is None:
        texts = []
    else:
        bad("input", "must be a string or an array of strings")
    out: JsonObject = {"model": model, "input": texts, "encoding_format": "float"}
    put(out, "dimensions", get_int(body, "dimensions", minimum=1))
    return OllamaRequest("embed", model, False, EMBEDDINGS, out, not texts)


def embeddings_request(raw: Any) -> OllamaRequest:
    """``/api/embeddings`` (the older endpoint) -> embeddings."""
    body = body_object(raw)
    model = need_str(body, "model")
    prompt = get_str(body, "prompt") or ""
    out: JsonObject = {"model": model, "input": [prompt], "encoding_format": "float"}
    return OllamaRequest("embeddings", model, False, EMBEDDINGS, out, not prompt)


# --- out ------------------------------------------------------------------------------


def done_reason(finish: Finish) -> str:
    return "length" if finish.reason == "length" else "stop"  # Ollama says stop after tools


def tool_calls(calls: list[tuple[str, str, str]]) -> list[JsonObject]:
    """(id, name, JSON arguments) -> Ollama's tool calls, whose arguments are objects."""
    out = []
    for call_id, name, arguments in calls:
        value = arguments_object(arguments)
        if value is None:
            raise UpstreamFailed(
                f"The engine's call of tool '{name}' has arguments that are not a JSON object."
            )
        out.append({"id": call_id, "function": {"name": name, "arguments": value}})
    return out


def metrics(
    request: OllamaRequest,
    usage: Counts | None,
    timings: Mapping[str, Any] | None,
    *,
    elapsed_ns: int | None,
    prompt_ns: int | None = None,
) -> JsonObject:
    """Counts and nanosecond durations, from llama.cpp's timings or the measured times."""
    out: JsonObject = {}
    if elapsed_ns is not None:
        out["total_duration"] = max(1, elapsed_ns)
        out["load_duration"] = 0
    if timings is not None and isinstance(timings.get("predicted_ms"), int | float):
        prompt_ms = timings.get("prompt_ms")
        if isinstance(prompt_ms, int | float):
            prompt_ns = int(prompt_ms * 1e6)
        eval_ns: int | None = int(timings["predicted_ms"] * 1e6)
    elif elapsed_ns is not None:
        eval_ns = elapsed_ns - (prompt_ns or 0)
    else:
        eval_ns = None
    if usage is not None:
        out["prompt_eval_count"] = usage.input
    if prompt_ns is not None:
        out["prompt_eval_duration"] = max(1, prompt_ns)
    if usage is not None and request.kind in ("chat", "generate"):
        out["eval_count"] = usage.output
    if eval_ns is not None and request.kind in ("chat", "generate"):
        out["eval_duration"] = max(1, eval_ns)
    return out


def load_answer(request: OllamaRequest, *, now_ns: int | None = None) -> JsonObject:
    """Ollama's answer to a request that only loads the model."""
    created = rfc3339(time.time_ns() if now_ns is None else now_ns)
    if request.kind == "embeddings":
        return {"embedding": []}
    if request.kind == "embed":
        return {"model": request.model, "embeddings": []}
    out: JsonObject = {"model": request.model, "created_at": created}
    if request.kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return {**out, "done": True, "done_reason": "load"}


def _embeddings(obj: Any) -> list[list[float]]:
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise UpstreamFailed("The engine's embeddings answer has no data.")
    rows = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    vectors = [row.get("embedding") for row in rows]
    if not all(isinstance(v, list) for v in vectors):
        raise UpstreamFailed("The engine's embeddings are not arrays of numbers.")
    return [list(v) for v in vectors if isinstance(v, list)]


def answer(
    request: OllamaRequest,
    obj: Any,
    *,
    elapsed_ns: int | None = None,
    now_ns: int | None = None,
) -> JsonObject:
    """Ollama's answer for the engine's whole answer to ``request``.

    ``elapsed_ns`` is the time the proxy measured from sending the request to
    the end of the answer (``total_duration``).
    """
    if request.kind == "embeddings":
        vectors = _embeddings(obj)
        return {"embedding": vectors[0] if vectors else []}
    if request.kind == "embed":
        return {
            "model": request.model,
            "embeddings": _embeddings(obj),
            **metrics(request, counts_from(obj), None, elapsed_ns=elapsed_ns),
        }
    parsed: ChatAnswer = parse_answer(obj)
    if parsed.finish is None:
        raise UpstreamFailed(CUT, code="answer_cut")
    out: JsonObject = {
        "model": request.model,
        "created_at": rfc3339(time.time_ns() if now_ns is None else now_ns),
    }
    if request.kind == "chat":
        message: JsonObject = {"role": "assistant", "content": parsed.text}
        if parsed.reasoning:
            message["thinking"] = parsed.reasoning
        if parsed.tool_calls:
            message["tool_calls"] = tool_calls(
                [(c.id, c.name, c.arguments) for c in parsed.tool_calls]
            )
        out["message"] = message
    else:
        out["response"] = parsed.text
        if parsed.reasoning:
            out["thinking"] = parsed.reasoning
    out["done"] = True
    out["done_reason"] = done_reason(parsed.finish)
    out.update(metrics(request, parsed.usage, parsed.timings, elapsed_ns=elapsed_ns))
    return out
