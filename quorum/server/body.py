"""Pure helpers over request bodies: find the model, rewrite one field, touch nothing else.

Routing needs only the ``model`` field. A JSON body is parsed for it; a
multipart body is scanned for the ``model`` part without decoding the file
parts. Rewrites (a different upstream model name, a downgraded response
format) replace exactly one value and keep every other byte as it came.
"""

from __future__ import annotations

import json
import re
from typing import Any

from quorum.errors import InvalidRequest

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)


def json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def model_of(data: dict[str, Any]) -> str:
    model = data.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    return model


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not match:
        raise InvalidRequest("The multipart Content-Type has no boundary.")
    return match.group(1) or match.group(2)


def _parts(body: bytes, boundary: str) -> list[tuple[int, int, bytes, int, int]]:
    """Each part as (part start, part end, header bytes, value start, value end)."""
    delim = b"--" + boundary.encode("latin-1")
    out: list[tuple[int, int, bytes, int, int]] = []
    pos = body.find(delim)
    if pos < 0:
        raise InvalidRequest("The multipart body does not contain its boundary.")
    while True:
        start = pos + len(delim)
        if body[start : start + 2] == b"--":
            return out  # closing delimiter
        if body[start : start + 2] != b"\r\n":
            raise InvalidRequest("The multipart body is malformed.")
        head_end = body.find(b"\r\n\r\n", start + 2)
        if head_end < 0:
            raise InvalidRequest("A multipart part has no header end.")
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise InvalidRequest("The multipart body is not terminated.")
        out.append((start + 2, nxt, body[start + 2 : head_end], head_end + 4, nxt))
        pos = nxt + 2


def multipart_fields(body: bytes, boundary: str, names: set[str]) -> dict[str, str]:
    """The text values of the named form fields (file parts are never decoded)."""
    found: dict[str, str] = {}
    for _, _, head, vstart, vend in _parts(body, boundary):
        match = _NAME.search(head)
        if match and b"filename=" not in head.lower():
            name = match.group(1).decode("utf-8", "replace")
            if name in names and name not in found:
                found[name] = body[vstart:vend].decode("utf-8", "replace")
    return found


def multipart_file(body: bytes, boundary: str, name: str) -> bytes | None:
    """The content of the first file part ``name`` (a view's copy), or None."""
    for _, _, head, vstart, vend in _parts(body, boundary):
        match = _NAME.search(head)
        if match and b"filename=" in head.lower() and match.group(1) == name.encode():
            return body[vstart:vend]
    return None


def replace_multipart_field(body: bytes, boundary: str, name: str, value: str) -> bytes:
    """``body`` with the first text field ``name`` set to ``value``; all else byte-identical."""
    for _, _, head, vstart, vend in _parts(body, boundary):
        match = _NAME.search(head)
        if match and match.group(1).decode("utf-8", "replace") == name:
            return body[:vstart] + value.encode() + body[vend:]
    return body


def replace_json_model(body: bytes, data: dict[str, Any], model: str) -> bytes:
    """The JSON body with ``model`` renamed (only called when the engine's name differs)."""
    return json.dumps({**data, "model": model}, ensure_ascii=False).encode()
