"""The per-token events are written from templates: the same text ``dumps`` gives, always."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from quorum.translate.common import Template, dumps, slot


@given(text=st.text(), number=st.integers(min_value=0, max_value=2**53), fixed=st.text())
def test_a_filled_template_is_what_dumps_writes(text: str, number: int, fixed: str) -> None:
    def event(n: Any, t: Any) -> dict[str, Any]:
        return {"type": "x", "n": n, "fixed": fixed, "delta": {"type": "text_delta", "text": t}}

    template = Template(event(slot("n"), slot("text")))
    filled = template.fill(n=number, text=text)
    assert filled == dumps(event(number, text))
    assert json.loads(filled)["delta"]["text"] == text


def test_text_from_a_client_cannot_pass_for_a_placeholder() -> None:
    # A model name is the client's: whatever it holds stays text, never a slot.
    sneaky = "\x00text\x00 and \\u0000text\\u0000"
    template = Template({"model": sneaky, "text": slot("text")})
    assert template.fill(text="hi") == dumps({"model": sneaky, "text": "hi"})
