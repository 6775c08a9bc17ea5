"""One multipart parser for node and relay: the differentials of issue 14 (finding 2) give the
same model everywhere (relay, node, a conforming MIME parser) or a 400."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.api import multipart
from quorum.api.body import request_model
from quorum.api.endpoints import ENDPOINTS
from quorum.errors import InvalidRequest
from tests.api.forms import (
    BOUNDARY,
    CONTENT_TYPE,
    FormPart,
    audio,
    form,
    reference_models,
    text,
)

TRANSCRIBE = ENDPOINTS["/v1/audio/transcriptions"]
B = BOUNDARY.encode()


def relay_reads(body: bytes) -> str | InvalidRequest:
    try:
        return request_model(TRANSCRIBE, CONTENT_TYPE, body)
    except InvalidRequest as exc:
        return exc


def node_reads(body: bytes) -> str | InvalidRequest | None:
    """What the node's proxy reads: its names for the shared helpers."""
    try:
        boundary = multipart.boundary_of(CONTENT_TYPE)
        return multipart.multipart_fields(body, boundary, {"model", "response_format"}).get("model")
    except InvalidRequest as exc:
        return exc


def agreed(body: bytes) -> str | InvalidRequest:
    """The model every reader sees, or the 400 both node and relay give."""
    relay, node = relay_reads(body), node_reads(body)
    if isinstance(relay, InvalidRequest):
        if isinstance(node, InvalidRequest):
            assert node.message == relay.message
        else:  # only a form without a model is read by the node and refused by the relay
            assert node is None or node == ""
        assert relay.status == 400
        return relay
    assert node == relay
    assert reference_models(body) == [relay]
    return relay


def disposition(value: str, content: str = "whisper-secret") -> FormPart:
    return FormPart("model", content.encode(), disposition=value)


ACCEPTED = {
    "name= in a Content-Type line counts for nothing": form(
        text("language", "whisper-secret", 'Content-Type: text/plain; name="model"'),
        text("model", "whisper-1"),
        audio(),
    ),
    "name= in another header counts for nothing": form(
        text("model", "whisper-1"),
        text("prompt", "whisper-secret", 'X-Field: form-data; name="model"'),
        audio(),
    ),
    "a model part inside a file's bytes is file content": form(
        audio(
            data=b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-secret\r\n'
        ),
        text("model", "whisper-1"),
    ),
    "an unquoted name": form(disposition("form-data; name=model", "whisper-1"), audio()),
    "an upper-case parameter name": form(
        disposition('form-data; NAME="model"', "whisper-1"), audio()
    ),
    "a text field in explicit UTF-8": form(
        text("model", "whisper-1", "Content-Type: text/plain; charset=UTF-8"), audio()
    ),
    "the body of aiohttp's FormData": (
        f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode(),
}


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_every_reader_sees_the_same_model(body: bytes) -> None:
    assert agreed(body) == "whisper-1"


def _raw_part(head: bytes, value: bytes = b"whisper-secret") -> bytes:
    return b"--" + B + b"\r\n" + head + b"\r\n\r\n" + value + b"\r\n"


CLOSE = b"--" + B + b"--\r\n"
ONE = text("model", "whisper-1")

REFUSED = {
    "two model fields": (form(ONE, text("model", "whisper-secret"), audio()), "more than once"),
    "a model field and a model file": (
        form(ONE, FormPart("model", b"whisper-secret", filename="m.txt")),
        "more than once",
    ),
    "model as a file": (form(FormPart("model", b"x", filename="m.txt"), audio()), "text field"),
    "a quoted quote in the name": (form(disposition('form-data; name="mo\\"del"')), "ambiguous"),
    "a backslash in the name": (form(disposition('form-data; name="mod\\el"'), ONE), "backslash"),
    "name* (RFC 2231)": (form(disposition("form-data; name*=utf-8''model"), ONE), "name*"),
    "the name given twice": (
        form(disposition('form-data; name="x"; name="model"')),
        "'name' more than once",
    ),
    "an unterminated quote": (form(disposition('form-data; name="model')), "malformed"),
    "space before '='": (form(disposition('form-data; name ="model"')), "malformed"),
    "a filename ending in a backslash": (
        form(disposition('form-data; name="file"; filename="C:\\dir\\"; name="model"'), ONE),
        "ambiguous",
    ),
    "not form-data": (form(disposition('attachment; name="model"'), ONE), "form-data"),
    "a folded header": (
        _raw_part(b'Content-Disposition: form-data;\r\n name="model"') + CLOSE,
        "folded",
    ),
    "a bare LF inside a part's head": (
        _raw_part(b'Content-Disposition: form-data; name="x"\nX: 1') + CLOSE,
        "bare CR or LF",
    ),
    "a second Content-Disposition": (
        _raw_part(
            b'Content-Disposition: form-data; name="x"\r\n'
            b'Content-Disposition: form-data; name="model"'
        )
        + CLOSE,
        "twice",
    ),
    "base64 transfer encoding": (
        form(text("model", "d2hpc3Blci1zZWNyZXQ=", "Content-Transfer-Encoding: base64")),
        "Content-Transfer-Encoding",
    ),
    "a UTF-16 model": (
        form(text("model", "whisper-1", "Content-Type: text/plain; charset=utf-16")),
        "UTF-8",
    ),
    "a _charset_ field": (form(text("_charset_", "iso-8859-1"), ONE), "_charset_"),
    "a model that is not UTF-8": (form(FormPart("model", b"whisper-\xff")), "UTF-8"),
    "a preamble": (b"hello\r\n" + form(ONE), "start with its boundary"),
    "an epilogue": (
        form(ONE) + _raw_part(b'Content-Disposition: form-data; name="model"'),
        "after",
    ),
    "a delimiter on a bare LF": (
        form(
            text("prompt", f'x\n--{BOUNDARY}\nContent-Disposition: form-data; name="model"\n\nz'),
            ONE,
        ),
        "inside a part",
    ),
    "the boundary mid-line in a file": (
        form(ONE, audio(data=b"abc--" + B + b"\r\n")),
        "inside a part",
    ),
    "transport padding after a boundary": (
        form(ONE).replace(b"--" + B + b"\r\n", b"--" + B + b" \r\n", 1),
        "after the boundary",
    ),
    "no closing boundary": (form(ONE)[: -len(CLOSE)], "not terminated"),
    "a boundary that is a prefix of a line": (
        form(ONE, text("prompt", "a\r\n--" + BOUNDARY + "x")),
        "after the boundary",
    ),
    "a boundary right after a part's blank line": (
        _raw_part(b'Content-Disposition: form-data; name="model"', b"--" + B + b"\r\n") + CLOSE,
        "inside a part",
    ),
    "a part with no head": (b"--" + B + b"\r\n\r\nwhisper-1\r\n" + CLOSE, "Disposition"),
}


@pytest.mark.parametrize(("body", "words"), REFUSED.values(), ids=REFUSED.keys())
def test_ambiguous_bodies_are_a_400_on_both_sides(body: bytes, words: str) -> None:
    refused = agreed(body)
    assert isinstance(refused, InvalidRequest)
    assert words in refused.message


def test_a_model_refusal_names_the_param() -> None:
    for body in (form(ONE, ONE), form(FormPart("model", b"x", filename="m"))):
        refused = agreed(body)
        assert isinstance(refused, InvalidRequest)
        assert refused.param == "model"


def test_missing_and_empty_model() -> None:
    missing = relay_reads(form(audio()))
    assert isinstance(missing, InvalidRequest) and missing.param == "model"
    assert "model parameter" in missing.message
    empty = relay_reads(form(text("model", ""), audio()))
    assert isinstance(empty, InvalidRequest) and "non-empty" in empty.message


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("multipart/form-data", "no boundary"),
        ("multipart/form-data; boundary=", "malformed"),
        ('multipart/form-data; boundary="a"; boundary="b"', "more than once"),
        ("multipart/form-data; boundary=" + "x" * 71, "1 to 70"),
        ('multipart/form-data; boundary="ends with space "', "1 to 70"),
        ("application/json", "multipart/form-data body"),
    ],
)
def test_bad_content_types(content_type: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        request_model(TRANSCRIBE, content_type, form(ONE))


def test_boundaries_quoted_with_parameters_around() -> None:
    assert multipart.boundary_of('multipart/form-data; charset=utf-8; boundary="a b";') == "a b"
    assert multipart.boundary_of("Multipart/Form-Data;BOUNDARY=xyz") == "xyz"


def test_parts_are_located_not_copied() -> None:
    raw = form(ONE, text("response_format", "verbose_json"), audio(data=b"\x00" * 1000))
    parts = multipart.multipart_parts(raw, BOUNDARY)
    assert [(p.name, p.is_file) for p in parts] == [
        ("model", False),
        ("response_format", False),
        ("file", True),
    ]
    assert raw[parts[2].start : parts[2].end] == b"\x00" * 1000
    assert parts[2].headers["content-type"] == "audio/wav"
    assert multipart.multipart_file(raw, BOUNDARY, "file") == b"\x00" * 1000
    assert multipart.multipart_file(raw, BOUNDARY, "model") is None


def test_too_many_parts() -> None:
    raw = form(ONE, *(text(f"f{i}", "v") for i in range(multipart.MAX_PARTS)))
    with pytest.raises(InvalidRequest, match="more than"):
        multipart.multipart_parts(raw, BOUNDARY)


def test_replacing_a_field_keeps_every_other_byte() -> None:
    raw = form(ONE, text("response_format", "verbose_json"), audio())
    new = multipart.replace_multipart_field(raw, BOUNDARY, "response_format", "json")
    assert new == raw.replace(b"verbose_json", b"json")
    assert multipart.replace_multipart_field(raw, BOUNDARY, "absent", "x") == raw
    # a file part of that name is not a field: nothing to replace
    assert multipart.replace_multipart_field(raw, BOUNDARY, "file", "x") == raw
    with pytest.raises(InvalidRequest, match="more than once"):
        multipart.replace_multipart_field(
            form(ONE, text("a", "1"), text("a", "2")), BOUNDARY, "a", ""
        )


# -- properties ---------------------------------------------------------------------------

NAMES = st.sampled_from(["model", "Model", "x", "file", "prompt", "_charset_"])
VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
EXTRA = st.sampled_from(
    [
        'Content-Type: text/plain; name="model"',
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/plain; charset=latin-1",
        "Content-Transfer-Encoding: base64",
        "Content-Transfer-Encoding: 8bit",
        'X-Name: name="model"',
    ]
)
PARTS = st.builds(
    FormPart,
    NAMES,
    VALUES.map(str.encode),
    st.none() | st.just("a.wav"),
    st.lists(EXTRA, max_size=2, unique=True).map(tuple),
)
SNIPPETS = st.sampled_from(
    [
        b"\n",
        b"\r",
        b"\r\n",
        b'"',
        b"\\",
        b";",
        b' name="model"',
        b"--" + B,
        b"\r\n--" + B + b"\r\n",
        b"\n--" + B + b"\n",
        b"\r\n\r\n",
        b'Content-Disposition: form-data; name="model"\r\n',
        b"filename=",
        b"\r\n--" + B + b"--",
        b"Content-Transfer-Encoding: base64\r\n",
        b"name*=",
    ]
)


@settings(max_examples=300)
@given(st.lists(PARTS, max_size=5), st.lists(st.tuples(st.integers(0), SNIPPETS), max_size=3))
def test_any_body_read_by_both_means_the_same_to_a_mime_parser(
    parts: list[FormPart], edits: list[tuple[int, bytes]]
) -> None:
    raw = form(*parts)
    for at, snippet in edits:
        at %= len(raw) + 1
        raw = raw[:at] + snippet + raw[at:]
    relay, node = relay_reads(raw), node_reads(raw)
    if isinstance(relay, InvalidRequest):
        assert isinstance(node, InvalidRequest) or node in (None, "")
        return
    assert node == relay
    assert reference_models(raw) == [relay]


@given(st.lists(PARTS.filter(lambda p: p.name != "model"), max_size=4), VALUES, VALUES)
def test_replacing_the_model_changes_nothing_else(
    parts: list[FormPart], old: str, new: str
) -> None:
    raw = form(text("model", old), *parts)
    try:
        before = multipart.multipart_fields(raw, BOUNDARY, {p.name for p in parts})
    except InvalidRequest:
        return  # not a body the proxy would forward
    changed = multipart.replace_multipart_field(raw, BOUNDARY, "model", new)
    head = form(text("model", "")).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert changed == head + new.encode() + raw[len(head) + len(old.encode()) :]
    assert multipart.multipart_fields(changed, BOUNDARY, {"model"}) == {"model": new}
    assert multipart.multipart_fields(changed, BOUNDARY, {p.name for p in parts}) == before
