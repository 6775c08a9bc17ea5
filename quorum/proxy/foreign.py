"""Requests in another API than the engine's: parsed once, sent through or translated.

A request to ``/v1/responses``, ``/v1/messages`` or Ollama's ``/api/chat``,
``/api/generate``, ``/api/embed`` and ``/api/embeddings`` is read once here
(:mod:`quorum.translate`: bad input is a 400 in the client's shape). Then,
for each holder the core tries:

- sent through unchanged (``native``) to a peer node, which is a Quorum node
  and speaks every API (it translates for its own engine), to an Ollama
  engine for Ollama's API, and to a service whose ``features`` name the API
  (``responses``, ``messages``, ``ollama``; Anthropic's token counting goes
  with ``messages``);
- else translated: the engine gets the chat-completions (or completions,
  embeddings) request, and its answer goes back through the API's
  translator, whole or streamed; ``X-Quorum-Translated`` says so.

Token counting (``/v1/messages/count_tokens``) is not translated but asked of
the engine (:mod:`quorum.proxy.count`); only holders that can count are tried
(:func:`can_serve`), and when none can the client is told so (400).

The proxy keeps one routing path: this module only decides the body and
path per holder, and makes the translator of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from quorum.config.models import EngineKind
from quorum.errors import InvalidRequest
from quorum.fleet import Holder, Route
from quorum.translate import anthropic, count, ollama, responses
from quorum.translate.anthropic_stream import AnthropicStream
from quorum.translate.ollama_stream import OllamaStream
from quorum.translate.responses_stream import ResponsesStream
from quorum.translate.stream import StreamTranslator

RESPONSES, MESSAGES, OLLAMA, COUNT = "responses", "messages", "ollama", "count_tokens"

_LABELS = {
    "responses": RESPONSES,
    "messages": MESSAGES,
    "ollama_chat": OLLAMA,
    "ollama_generate": OLLAMA,
    "ollama_embed": OLLAMA,
    "ollama_embeddings": OLLAMA,
    "count_tokens": COUNT,
}


@dataclass(frozen=True, slots=True)
class Foreign:
    """A request in a foreign API, and what an engine that does not speak it gets instead."""

    api: str  # responses | messages | ollama | count_tokens
    model: str
    stream: bool
    path: str  # the engine's path when translated
    body: dict[str, Any]  # the engine's body when translated (model: the client's name)
    request: Any  # the translator's request value
    load_only: bool = False  # Ollama: nothing to generate, only "load the model"

    @property
    def translated_header(self) -> str:
        return f"{self.api}; engine spoke {self.path.removeprefix('/v1/')}"


def is_foreign(label: str) -> bool:
    return label in _LABELS


def parse(label: str, data: dict[str, Any]) -> Foreign:
    """Read a foreign request (``InvalidRequest`` names a bad field)."""
    api = _LABELS[label]
    if api == RESPONSES:
        r = responses.chat_request(data)
        return Foreign(api, r.model, r.stream, responses.PATH, r.chat, r)
    if api == MESSAGES:
        m = anthropic.chat_request(data)
        return Foreign(api, m.model, m.stream, anthropic.PATH, m.chat, m)
    if api == COUNT:
        c = count.count_request(data)
        return Foreign(api, c.model, False, count.PATH, c.chat, c)
    read = {
        "ollama_chat": ollama.chat_request,
        "ollama_generate": ollama.generate_request,
        "ollama_embed": ollama.embed_request,
        "ollama_embeddings": ollama.embeddings_request,
    }[label]
    o = read(data)
    return Foreign(api, o.model, o.stream, o.path, o.body, o, o.load_only)


def native(holder: Holder, foreign: Foreign) -> bool:
    """Whether ``holder`` takes the request as the client sent it."""
    if holder.route is not Route.LOCAL:
        return True  # a peer node speaks every API
    if foreign.api == OLLAMA and holder.engine is EngineKind.OLLAMA:
        return True
    return (MESSAGES if foreign.api == COUNT else foreign.api) in holder.features


def can_serve(holder: Holder, foreign: Foreign) -> bool:
    """Whether ``holder`` can answer the request at all: any can but for token counting,
    which needs an engine that serves Anthropic's API or can count (a peer's too)."""
    if foreign.api != COUNT:
        return True
    return MESSAGES in holder.features or holder.engine.value in count.ENGINES


def unservable(foreign: Foreign, holders: Iterable[Holder]) -> InvalidRequest:
    """The error for a request none of whose holders can answer it (token counting)."""
    engines = {f"'{h.service}' on {h.node_name}": h.engine.value for h in holders}
    return InvalidRequest(count.cannot_count(engines), code="count_tokens_unsupported")


def engine_body(foreign: Foreign, upstream_model: str) -> bytes:
    return json.dumps({**foreign.body, "model": upstream_model}, ensure_ascii=False).encode()


def whole(foreign: Foreign, answer: Any, elapsed_ns: int) -> dict[str, Any]:
    """The client's answer for the engine's whole answer (``UpstreamFailed`` if unusable)."""
    if foreign.api == RESPONSES:
        return responses.answer(foreign.request, answer)
    if foreign.api == MESSAGES:
        return anthropic.answer(foreign.request, answer)
    return ollama.answer(foreign.request, answer, elapsed_ns=elapsed_ns)


def stream(foreign: Foreign) -> StreamTranslator:
    if foreign.api == RESPONSES:
        return ResponsesStream(foreign.request)
    if foreign.api == MESSAGES:
        return AnthropicStream(foreign.request)
    return OllamaStream(foreign.request)


def load_answer(foreign: Foreign) -> dict[str, Any]:
    return ollama.load_answer(foreign.request)
