"""The public endpoints, and the model a request body names. Pure functions.

The relay needs only the ``model`` of a request to pick a node; the body
itself crosses the tunnel as the same bytes. A multipart upload is scanned
for its ``model`` field without copying the (possibly large) file parts.
The endpoint table mirrors the node's (``quorum/routing/endpoints.py``): a
transcription only goes to an ``stt`` service, a chat only to an ``llm``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from quorum.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    types: tuple[str, ...]
    multipart: bool
    label: str


ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint("/v1/chat/completions", ("llm",), False, "chat"),
        Endpoint("/v1/completions", ("llm",), False, "completion"),
        Endpoint("/v1/embeddings", ("embedding", "llm"), False, "embedding"),
        Endpoint("/v1/audio/transcriptions", ("stt",), True, "transcription"),
        Endpoint("/v1/audio/translations", ("stt",), True, "translation"),
        Endpoint("/v1/audio/speech", ("tts",), False, "speech"),
        Endpoint("/v1/images/generations", ("image",), False, "image"),
        Endpoint("/v1/images/edits", ("image",), True, "image_edit"),
        Endpoint("/v1/images/variations", ("image",), True, "image_variation"),
    )
}

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_FIELD_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_MAX_PART_HEADER = 16 * 1024
_MAX_FIELD = 4096


def model_of(endpoint: Endpoint, content_type: str, payload: bytes) -> str:
    """The model the request asks for; ``InvalidRequest`` (400) when there is none."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if endpoint.multipart:
        if mime != "multipart/form-data":
            raise InvalidRequest(
                f"{endpoint.path} takes a multipart/form-data body (got '{mime or 'none'}')."
            )
        model = multipart_field(content_type, payload, "model")
    else:
        if mime != "application/json":
            raise InvalidRequest(
                f"{endpoint.path} takes a JSON body: set 'Content-Type: application/json' "
                f"(got '{mime or 'none'}')."
            )
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The body must be a JSON object.")
        value = data.get("model")
        model = value if isinstance(value, str) else None
    if not model:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    return model


def multipart_field(content_type: str, payload: bytes, name: str) -> str | None:
    """The value of the non-file form field ``name``, or None."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidRequest("The multipart body has no boundary in its Content-Type.")
    delimiter = b"--" + match.group(1).strip().encode("latin-1")
    pos = payload.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if payload[start : start + 2] == b"--":
            return None  # the closing delimiter
        head_end = payload.find(b"\r\n\r\n", start, start + _MAX_PART_HEADER)
        if head_end < 0:
            return None
        headers = payload[start:head_end]
        nxt = payload.find(b"\r\n" + delimiter, head_end)
        if nxt < 0:
            return None
        disposition = next(
            (
                line
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            b"",
        )
        field = _FIELD_NAME.search(disposition)
        if (
            field is not None
            and field.group(1).decode("utf-8", "replace") == name
            and b"filename=" not in disposition.lower()
        ):
            value = payload[head_end + 4 : min(nxt, head_end + 4 + _MAX_FIELD)]
            return value.decode("utf-8", "replace").strip()
        pos = nxt + 2
    return None
