"""Anthropic's token counting (``POST /v1/messages/count_tokens``), asked of an engine.

In: :func:`count_request` reads the body, which is a Messages request without
``max_tokens`` (:func:`~.anthropic.chat_request` reads it, so a bad field is
named the same way); the engine gets its messages and tools.

Then a :class:`Counting` (sans-I/O) says what to ask the engine, one request
after the other, and reads each answer until it has the count. Each engine is
asked with what it serves (``counter(engine)``; None when it cannot count):

- vLLM: ``POST /tokenize`` with the chat's ``messages`` and ``tools``; its chat
  template is applied with the generation prompt, as a chat request would be;
  the answer's ``count``.
- llama.cpp (``llama-server``): ``POST /apply-template`` with the chat (its
  ``prompt``), then ``POST /tokenize`` of that prompt with ``add_special`` (the
  BOS a chat request adds): the number of ``tokens``.
- llama-cpp-python (and the embedded engine, which is one) and Ollama have no
  endpoint that applies the chat template without generating: they are asked
  the chat itself, for one token (``max_tokens: 1``), and the answer's
  ``usage.prompt_tokens`` is the count (both count the whole prompt, cached or
  not). It costs one evaluation of the prompt, which the engine's prompt cache
  then gives the real request for free.
- Other engines (LM Studio, MLX, any OpenAI-compatible server) are not asked:
  nothing they serve is known to count a chat's prompt exactly.

Out: ``{"input_tokens": N}``. An engine that answers without the count is an
:class:`~quorum.errors.UpstreamFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quorum.errors import UpstreamFailed

from .anthropic import chat_request
from .common import JsonObject, body_object, counts_from

PATH = "/v1/messages/count_tokens"

# The EngineKind values (quorum.config) of the engines asked, and how.
_TOKENIZE = frozenset({"vllm"})
_TEMPLATE_THEN_TOKENIZE = frozenset({"llamacpp"})
_ONE_TOKEN = frozenset({"llama-cpp-python", "embedded", "ollama"})
ENGINES = _TOKENIZE | _TEMPLATE_THEN_TOKENIZE | _ONE_TOKEN
"""Engines a node can ask to count a chat's tokens."""

_KEPT = ("messages", "tools", "tool_choice")  # what of the chat decides its prompt


@dataclass(frozen=True, slots=True)
class CountRequest:
    model: str
    chat: JsonObject  # model, messages, and tools and tool_choice when given


def count_request(raw: Any) -> CountRequest:
    """The chat whose prompt is to be counted (InvalidRequest names a bad field)."""
    body = body_object(raw)
    # Counting takes no max_tokens and no stream: a Messages request with both fixed.
    messages = chat_request({**body, "max_tokens": 1, "stream": False})
    chat = {"model": messages.model}
    chat.update((k, messages.chat[k]) for k in _KEPT if k in messages.chat)
    return CountRequest(messages.model, chat)


@dataclass(frozen=True, slots=True)
class Ask:
    """One request to the engine: ``POST path`` with ``body`` (JSON)."""

    path: str
    body: JsonObject


class Counting:
    """The requests that count one chat's tokens on one engine. Sans-I/O: send
    :meth:`first`, then give each JSON answer to :meth:`read`, which returns the next
    request or the count."""

    def __init__(self, engine: str, chat: JsonObject) -> None:
        self._engine = engine
        self._chat = chat
        self._templated = False  # llama.cpp: the prompt came, its tokens are asked next

    def first(self) -> Ask:
        chat = self._chat
        if self._engine in _TEMPLATE_THEN_TOKENIZE:
            return Ask("/apply-template", dict(chat))  # it reads a whole chat request
        # vLLM's /tokenize takes no tool_choice, and a forced choice is no part of the
        # prompt; a one-token answer must not be made to call a tool.
        prompt = {k: v for k, v in chat.items() if k != "tool_choice"}
        if self._engine in _TOKENIZE:
            return Ask("/tokenize", {**prompt, "add_generation_prompt": True})
        return Ask("/v1/chat/completions", {**prompt, "max_tokens": 1, "stream": False})

    def read(self, answer: Any) -> Ask | int:
        if not isinstance(answer, dict):
            raise _unusable("its answer is not a JSON object")
        if self._engine in _TOKENIZE:
            return _count(answer.get("count"), "count")
        if self._engine in _TEMPLATE_THEN_TOKENIZE:
            if not self._templated:
                prompt = answer.get("prompt")
                if not isinstance(prompt, str):
                    raise _unusable("/apply-template gave no prompt")
                self._templated = True
                return Ask("/tokenize", {"content": prompt, "add_special": True})
            tokens = answer.get("tokens")
            if not isinstance(tokens, list):
                raise _unusable("/tokenize gave no tokens")
            return len(tokens)
        counts = counts_from(answer)
        return _count(counts.input if counts is not None else None, "usage.prompt_tokens")


def counter(engine: str, chat: JsonObject) -> Counting | None:
    """How to count on an engine of this kind, or None when it cannot count."""
    return Counting(engine, chat) if engine in ENGINES else None


def answer(count: int) -> JsonObject:
    return {"input_tokens": count}


def _count(value: Any, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _unusable(f"its answer has no {field}")


def _unusable(why: str) -> UpstreamFailed:
    return UpstreamFailed(f"The engine could not count the tokens: {why}.")


def cannot_count(engines: Mapping[str, str]) -> str:
    """The message for a model none of whose holders can count: ``engines`` maps each
    holder (service on node) to its engine."""
    which = ", ".join(f"{holder} ({engine})" for holder, engine in engines.items())
    return (
        "Token counting needs an engine that can count a chat's tokens (vLLM, llama.cpp, "
        f"llama-cpp-python or Ollama), or one that serves Anthropic's API; the holders of "
        f"this model cannot: {which}."
    )
