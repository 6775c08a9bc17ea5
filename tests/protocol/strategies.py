"""Hypothesis strategies for every message and every legal frame."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from quorum.protocol import (
    GoAway,
    GoAwayReason,
    Hello,
    ModelInfo,
    Presence,
    RequestHead,
    ResetCode,
    ResponseHead,
    Revocation,
    Role,
    Usage,
    UsageRecord,
)
from quorum.protocol.frames import (
    MAX_STREAM_ID,
    MAX_WINDOW,
    PING_SIZE,
    Flag,
    Frame,
    FrameType,
    encode_reset,
    encode_window_update,
)

# Any valid Unicode text (no lone surrogates), which is what JSON strings carry.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
tokens = st.text(string.ascii_letters + string.digits + "-_.!#$%&'*+^`|~", min_size=1, max_size=24)
header_values = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=60
)
headers = st.lists(st.tuples(tokens, header_values), max_size=6).map(tuple)
counts = st.integers(0, 2**53)
capabilities = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)

hellos = st.builds(
    Hello,
    version=st.just(1),
    node_id=names,
    role=st.sampled_from(Role),
    max_streams=st.integers(1, MAX_STREAM_ID),
    capabilities=st.lists(capabilities, max_size=5).map(tuple),
)
models = st.builds(
    ModelInfo,
    id=names,
    type=st.sampled_from(["llm", "stt", "tts", "image", "embedding"]),
    service=text,
    features=st.lists(names, max_size=3).map(tuple),
)
presences = st.builds(
    Presence,
    node_id=names,
    models=st.lists(models, max_size=4).map(tuple),
    online=st.booleans(),
    age_ms=st.integers(0, 2**31 - 1),
)
usages = st.builds(
    Usage,
    records=st.lists(
        st.builds(
            UsageRecord,
            model=names,
            requests=counts,
            prompt_tokens=counts,
            completion_tokens=counts,
            errors=counts,
        ),
        max_size=4,
    ).map(tuple),
)
goaways = st.builds(
    GoAway,
    last_stream_id=st.integers(0, MAX_STREAM_ID),
    reason=st.sampled_from(GoAwayReason),
    message=text,
)
request_heads = st.builds(
    RequestHead,
    method=st.from_regex(r"[A-Z]{1,16}", fullmatch=True),
    path=st.from_regex(r"/[!-~]{0,40}", fullmatch=True),
    headers=headers,
    node=st.none() | names,
    model=st.none() | names,
    deadline_ms=st.none() | st.integers(0, 2**31 - 1),
)
response_heads = st.builds(ResponseHead, status=st.integers(100, 599), headers=headers)

stream_ids = st.integers(1, MAX_STREAM_ID)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """Any structurally legal frame, payloads included."""
    kind = draw(st.sampled_from(FrameType))
    ignorable = draw(st.sampled_from([Flag.NONE, Flag.IGNORABLE]))
    end = draw(st.sampled_from([Flag.NONE, Flag.END_STREAM]))
    payload: bytes
    if kind is FrameType.HELLO:
        return Frame(kind, 0, draw(hellos).encode(), ignorable)
    if kind in (FrameType.PING, FrameType.PONG):
        return Frame(kind, 0, draw(st.binary(min_size=PING_SIZE, max_size=PING_SIZE)), ignorable)
    if kind is FrameType.GOAWAY:
        return Frame(kind, 0, draw(goaways).encode(), ignorable)
    if kind is FrameType.PRESENCE:
        return Frame(kind, 0, draw(presences).encode(), ignorable)
    if kind is FrameType.USAGE:
        return Frame(kind, 0, draw(usages).encode(), ignorable)
    if kind is FrameType.REVOCATION:
        return Frame(kind, 0, Revocation(draw(text)).encode(), ignorable)
    if kind is FrameType.WINDOW_UPDATE:
        increment = encode_window_update(draw(st.integers(1, MAX_WINDOW)))
        return Frame(kind, draw(st.integers(0, MAX_STREAM_ID)), increment, ignorable)
    sid = draw(stream_ids)
    if kind is FrameType.REQUEST:
        return Frame(kind, sid, draw(request_heads).encode(), ignorable | end)
    if kind is FrameType.RESPONSE:
        return Frame(kind, sid, draw(response_heads).encode(), ignorable | end)
    if kind is FrameType.DATA:
        blocked = draw(st.sampled_from([Flag.NONE, Flag.BLOCKED]))
        payload = draw(st.binary(max_size=2048))
        return Frame(kind, sid, payload, ignorable | end | blocked)
    payload = encode_reset(draw(st.sampled_from(ResetCode)), draw(text))
    return Frame(FrameType.RESET, sid, payload, ignorable)
