"""JSON bodies and the content-encoding policy: every bad body is a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.api import body as bodies
from quorum.api.endpoints import ENDPOINTS
from quorum.errors import InvalidRequest

CHAT = ENDPOINTS["/v1/chat/completions"]
LIMIT = bodies.MAX_JSON_DEPTH


def refused(raw: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        bodies.json_object(raw)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "m", "x": ' + b'{"y": ' * (LIMIT + 1) + b"1" + b"}" * (LIMIT + 2),
    ],
    ids=["arrays", "unterminated", "objects", "inside an object", "one past the limit"],
)
def test_deep_json_is_a_400(raw: bytes) -> None:
    message = refused(raw).message
    if raw.startswith(b"["):  # not an object, known from the first byte, before any depth
        assert message == "The request body must be a JSON object."
    else:
        assert "nests deeper" in message


def test_depth_up_to_the_limit_is_read() -> None:
    raw = b'{"model": "m", "x": ' + b"[" * (LIMIT - 1) + b"]" * (LIMIT - 1) + b"}"
    assert bodies.json_object(raw)["model"] == "m"


def test_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"model": "m", "x": "[{" * 10_000, "y": ['\\"[', "]\\"]}).encode()
    assert bodies.json_depth(raw) == 2
    assert bodies.json_object(raw)["x"] == "[{" * 10_000


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\\n\u00e9'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='ab[]{}"\\'), inner, max_size=3)
    ),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(JSON, st.booleans(), st.sampled_from([None, 1]))
def test_json_depth_is_the_nesting_a_parser_sees(
    value: Any, ascii: bool, indent: int | None
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii, indent=indent).encode()
    assert bodies.json_depth(raw) == depth(value)
    assert bodies.loads(raw) == value


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'"model"', "JSON object"),
        (b"null", "JSON object"),
        (b'{"model": "\xff"}', "not UTF-8"),
        ('{"model": "m"}'.encode("utf-16"), "not UTF-8"),
        (b'\xef\xbb\xbf{"model": "m"}', "not valid JSON"),
        (b'{"model": "m", "n": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_bad_json(raw: bytes, words: str) -> None:
    assert words in refused(raw).message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "a", "model": "b"}',
        b'{"model": "a", "\\u006dodel": "b"}',
        b'{"\\u006D\\u006F\\u0064\\u0065\\u006C": "a", "x": 1, "model": "b"}',
    ],
)
def test_model_given_twice_is_a_400(raw: bytes) -> None:
    assert refused(raw).param == "model"


def test_model_elsewhere_is_not_a_duplicate() -> None:
    raw = b'{"model": "a", "x": {"model": "b", "model": "c"}, "role": "model", "y": "\\"model\\""}'
    assert bodies.model_of(bodies.json_object(raw)) == "a"


@pytest.mark.parametrize(
    ("data", "words"),
    [({}, "model parameter"), ({"model": ""}, "non-empty"), ({"model": 3}, "non-empty")],
)
def test_bad_model(data: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as info:
        bodies.model_of(data)
    assert info.value.param == "model"


def test_request_model_checks_the_media_type() -> None:
    assert bodies.request_model(CHAT, "application/json; charset=utf-8", b'{"model": "m"}') == "m"
    for content_type in ("", "text/plain", "multipart/form-data; boundary=x"):
        with pytest.raises(InvalidRequest, match="takes a JSON body"):
            bodies.request_model(CHAT, content_type, b'{"model": "m"}')


OLD = "old-model-name"
KEYS = st.text(alphabet="abxyz_é", min_size=1, max_size=6).filter(lambda k: k != "model")


@given(
    st.dictionaries(KEYS, JSON, max_size=4),
    st.integers(0, 4),
    st.text(max_size=10),
    st.booleans(),
    st.sampled_from([None, 2]),
)
def test_renaming_the_model_keeps_every_other_byte(
    rest: dict[str, Any], at: int, new: str, ascii: bool, indent: int | None
) -> None:
    items = list(rest.items())
    items.insert(min(at, len(items)), ("model", OLD))
    raw = json.dumps(dict(items), ensure_ascii=ascii, indent=indent).encode()
    data = bodies.json_object(raw)
    renamed = bodies.replace_json_model(raw, data, new)
    assert renamed == raw.replace(
        b'"' + OLD.encode() + b'"', json.dumps(new, ensure_ascii=False).encode()
    )
    assert json.loads(renamed) == {**data, "model": new}


def test_renaming_keeps_escapes_a_re_encoding_would_break() -> None:
    raw = b'{"model": "a", "x": "\\ud800 \\u00e9"}'
    assert bodies.replace_json_model(raw, bodies.json_object(raw), "b") == raw.replace(
        b'"a"', b'"b"'
    )
    assert bodies.replace_json_field(b" {} ", "model", "m") == b' {"model": "m"} '
    assert bodies.replace_json_field(b'{"a": 1}', "model", "m") == b'{"model": "m", "a": 1}'


@pytest.mark.parametrize("values", [[], [""], ["identity"], ["IDENTITY"], ["identity, identity"]])
def test_identity_bodies_pass(values: list[str]) -> None:
    bodies.check_content_encoding(values)


@pytest.mark.parametrize(
    "values",
    [["gzip"], ["bogus"], ["br"], ["identity, gzip"], ["identity", "deflate"], ["x" * 500]],
)
def test_any_other_coding_is_a_400(values: list[str]) -> None:
    with pytest.raises(InvalidRequest) as info:
        bodies.check_content_encoding(values)
    assert info.value.status == 400
    assert info.value.code == "unsupported_content_encoding"
    assert "uncompressed" in info.value.message
    assert len(info.value.message) < 200
