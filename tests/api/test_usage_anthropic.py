"""Token counts of an Anthropic stream passed through: input from message_start, output
from message_delta (which carries only that)."""

from __future__ import annotations

import json

from quorum.api.usage import SseUsageScanner, Usage


def test_an_anthropic_stream_keeps_its_input_tokens() -> None:
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 12, "output_tokens": 1}},
    }
    delta = {"type": "message_delta", "usage": {"output_tokens": 30}}
    scanner = SseUsageScanner()
    for name, event in (("message_start", start), ("message_delta", delta)):
        scanner.feed(f"event: {name}\ndata: {json.dumps(event)}\n\n".encode())
    assert scanner.close() == Usage(12, 30)
