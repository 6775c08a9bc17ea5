"""The header policy of every hop."""

from __future__ import annotations

from quorum.api import headers


def test_a_hop_forwards_only_end_to_end_headers() -> None:
    got = headers.forwarded_request_headers(
        [
            ("Host", "localhost"),
            ("Content-Type", "application/json"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Authorization", "Bearer qk_x"),
            ("x-api-key", "qk_y"),
            ("Cookie", "quorum_session=s"),
            ("X-Quorum-Hop", "1"),
            ("x-request-id", "abc"),
            ("Content-Encoding", "identity"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Accept", "text/event-stream"),
            ("OpenAI-Beta", "assistants=v2"),
        ]
    )
    assert got == [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("OpenAI-Beta", "assistants=v2"),
    ]


def test_policy_sets() -> None:
    assert headers.HOP_BY_HOP <= headers.REQUEST_DROP
    assert headers.HOP_HEADER.lower() in headers.REQUEST_DROP
    assert {"content-length", "transfer-encoding", "date"} <= headers.RESPONSE_DROP
    assert all(h == h.lower() for h in headers.REQUEST_DROP | headers.RESPONSE_DROP)
