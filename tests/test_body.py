from __future__ import annotations

import pytest

from quorum.api import body as json_body
from quorum.api import multipart as form
from quorum.errors import InvalidRequest

BOUNDARY = "----qb7"


def multipart(fields: dict[str, str], file: bytes = b"\x00RIFF\r\n--not-a-boundary\xff") -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + file
        + b"\r\n"
    )
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_model_from_json() -> None:
    assert json_body.model_of(json_body.json_object(b'{"model": "m", "x": 1}')) == "m"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_json(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        json_body.json_object(raw)


@pytest.mark.parametrize("data", [{}, {"model": ""}, {"model": 3}])
def test_bad_model(data: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest) as info:
        json_body.model_of(data)
    assert info.value.param == "model"


def test_multipart_fields_skip_files() -> None:
    raw = multipart({"model": "whisper-1", "response_format": "verbose_json"})
    found = form.multipart_fields(raw, BOUNDARY, {"model", "response_format", "file"})
    assert found == {"model": "whisper-1", "response_format": "verbose_json"}


def test_boundary_quoted_and_plain() -> None:
    assert form.boundary_of('multipart/form-data; boundary="a b"') == "a b"
    assert form.boundary_of("multipart/form-data; charset=x; boundary=xyz") == "xyz"
    with pytest.raises(InvalidRequest):
        form.boundary_of("multipart/form-data")


def test_replace_field_keeps_every_other_byte() -> None:
    raw = multipart({"model": "a", "response_format": "verbose_json"})
    new = form.replace_multipart_field(raw, BOUNDARY, "response_format", "text")
    assert new == raw.replace(b"verbose_json", b"text")
    assert form.replace_multipart_field(raw, BOUNDARY, "absent", "x") == raw


@pytest.mark.parametrize(
    "raw",
    [b"no boundary here", b"--" + BOUNDARY.encode() + b"\r\nX: y\r\n\r\nunterminated"],
)
def test_malformed_multipart(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        form.multipart_fields(raw, BOUNDARY, {"model"})
