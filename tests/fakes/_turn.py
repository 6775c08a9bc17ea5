"""What a fake model answers in one turn: text, or a call of a tool the request offers.

The fakes' model is deterministic, whatever API it is asked through:

- no tools offered (or ``tool_choice`` none): the reply is ``engine.reply(prompt)``
  (``"You said: <last user message>"`` by default);
- tools offered and the conversation does not end in a tool result: the model calls the
  first tool, with the last user message as the value of the tool's first parameter
  (``{}`` when the tool takes none);
- the conversation ends in a tool result: the reply is ``"The tool said: <result>"``.

Token counts are whitespace-separated words; a token limit below the reply's length cuts
the text (finish ``length``). Each API's fake renders the :class:`Turn` in its own shapes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._core import compact_json

_TOKEN = re.compile(r"\s*\S+")


def count_words(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class ToolSpec:
    """A tool the request offers: its name and the names of its parameters, in order."""

    name: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolPlan:
    """A call the model makes."""

    call_id: str
    name: str
    arguments: str  # JSON text

    def argument_pieces(self, count: int) -> tuple[str, ...]:
        """The arguments text cut into ``count`` pieces, as engines stream them."""
        text = self.arguments
        step = max(1, -(-len(text) // max(1, count)))
        return tuple(text[i : i + step] for i in range(0, len(text), step)) or ("",)


@dataclass(frozen=True)
class Turn:
    text: str
    call: ToolPlan | None
    prompt_tokens: int
    completion_tokens: int
    finish: str  # stop | length | tool_calls

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def params_of(schema: Any) -> tuple[str, ...]:
    """The parameter names of a JSON schema object (``properties``' keys, in order)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    return tuple(props) if isinstance(props, dict) else ()


def new_call_id(prefix: str = "call_") -> str:
    return prefix + secrets.token_hex(12)


def plan_turn(
    reply: Callable[[str], str],
    *,
    prompt: str,
    prompt_tokens: int,
    tools: Sequence[ToolSpec] = (),
    tool_result: str | None = None,
    limit: Any = None,
    call_prefix: str = "call_",
) -> Turn:
    """The model's answer to a conversation whose last user message is ``prompt``.

    ``tool_result`` is the content of the conversation's last message when that is a
    tool's result (None otherwise); ``limit`` the request's token limit, if any.
    """
    if tool_result is None and tools:
        tool = tools[0]
        args = {tool.params[0]: prompt} if tool.params else {}
        call = ToolPlan(new_call_id(call_prefix), tool.name, compact_json(args))
        return Turn("", call, prompt_tokens, count_words(call.arguments), "tool_calls")
    text = reply(prompt) if tool_result is None else f"The tool said: {tool_result}"
    finish = "stop"
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < count_words(text):
        text = "".join(_TOKEN.findall(text)[:limit])
        finish = "length"
    return Turn(text, None, prompt_tokens, count_words(text), finish)
