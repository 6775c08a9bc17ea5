"""Request bodies: find the model, rewrite one field, touch nothing else. Pure.

Node and relay read a body with these functions only (multipart forms with
:mod:`quorum.api.multipart`), so they can never see two different models in
one body.

Contract:

- **Content-Encoding** is ``identity`` only. Anything else (``gzip``, ``br``,
  a made-up name) is a 400 ``unsupported_content_encoding`` in the caller's
  error shape, checked before the body is read. 400 rather than 415: a
  compressed body is a request to fix, like any other malformed body, and
  SDKs treat both the same; refusing codings also means nothing is ever
  inflated past the body limit.
- **JSON** bodies are UTF-8 objects nested at most ``MAX_JSON_DEPTH`` levels
  (deeper is a 400 before the parser sees it, never a ``RecursionError``).
  A top-level ``model`` given twice is a 400: parsers disagree on which wins.
- **Rewrites** (:func:`replace_json_field`) replace one value and keep every
  other byte as it came.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from quorum.api.endpoints import BodyKind, Endpoint
from quorum.api.multipart import boundary_of, form_model, multipart_fields
from quorum.errors import InvalidRequest

MAX_JSON_DEPTH = 128
"""Deeper JSON is refused: legitimate requests nest a few levels, tool schemas a few dozen."""

# -- content encoding -------------------------------------------------------------------


def check_content_encoding(values: Iterable[str]) -> None:
    """Pass for no ``Content-Encoding`` or ``identity``; else 400 (see the module docstring)."""
    for value in values:
        for coding in value.split(","):
            name = coding.strip().lower()
            if name and name != "identity":
                shown = coding.strip()[:64]
                raise InvalidRequest(
                    f"Compressed request bodies are not accepted (Content-Encoding: {shown}); "
                    "send the body uncompressed.",
                    code="unsupported_content_encoding",
                )


# -- JSON -------------------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[{]}")))
_WS = frozenset(" \t\n\r")
_MODEL_KEY = re.compile(
    rb'"(?:m|\\u006[dD])(?:o|\\u006[fF])(?:d|\\u0064)(?:e|\\u0065)(?:l|\\u006[cC])"'
)
_decoder = json.JSONDecoder()
_NOT_AN_OBJECT = frozenset(bytes([c]) for c in b'["-0123456789tfn')
"""First bytes of JSON values other than objects."""


def json_depth(body: bytes) -> int:
    """How deep a parser would nest reading ``body`` (brackets inside strings do not count)."""
    steps = _STRING.sub(b"", body).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0)


def loads(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Any JSON value; ``ValueError`` for bad JSON, non-UTF-8 or nesting past ``max_depth``."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    # Cheap first: a body with few brackets cannot be deep.
    if body.count(b"[") + body.count(b"{") > max_depth and json_depth(body) > max_depth:
        raise TooDeep(f"it nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # not reached within the bound; kept as a last guard
        raise TooDeep("it nests too deeply") from None


class TooDeep(ValueError):
    """JSON nested past the bound (valid or not, it is not read)."""


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 if it is empty, not UTF-8 JSON, too deep or not an object.

    A body naming ``model`` twice at the top level is a 400 as well.
    """
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    if bytes(body.lstrip(b" \t\r\n")[:1]) in _NOT_AN_OBJECT:
        # Known from its first byte: an array or a number of megabytes is not parsed to say so.
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        data = loads(body)
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid JSON: it is not UTF-8.") from None
    except TooDeep as exc:
        raise InvalidRequest(f"The request body is refused: {exc}.") from None
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if len(_MODEL_KEY.findall(body)) > 1:
        keys = [key for key, _, _ in _members(body.decode("utf-8"))]
        if keys.count("model") > 1:
            raise InvalidRequest("The request body gives 'model' more than once.", param="model")
    return data


def model_of(data: dict[str, Any]) -> str:
    """The ``model`` of a JSON request; 400 (param ``model``) if it is missing or not a name."""
    model = data.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    return model


def _skip(text: str, pos: int) -> int:
    while text[pos : pos + 1] in _WS:
        pos += 1
    return pos


def _members(text: str) -> Iterator[tuple[str, int, int]]:
    """Each top-level member of a JSON object text as (key, value start, value end).

    Only called on text ``json.loads`` accepted (and bounded in depth).
    """
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return
    while True:
        key, pos = _decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(key, str) or text[pos : pos + 1] != ":":
            raise ValueError("expected a key and ':'")
        start = _skip(text, pos + 1)
        _, end = _decoder.raw_decode(text, start)
        yield key, start, end
        pos = _skip(text, end)
        if text[pos : pos + 1] == "}":
            return
        if text[pos : pos + 1] != ",":
            raise ValueError("expected ',' or '}'")
        pos = _skip(text, pos + 1)


def replace_json_field(body: bytes, name: str, value: str) -> bytes:
    """``body`` (a JSON object ``json_object`` accepted) with the top-level ``name`` set to
    ``value``; every other byte stays as it came. An absent ``name`` is added first."""
    text = body.decode("utf-8")
    new = json.dumps(value, ensure_ascii=False)
    for key, start, end in _members(text):
        if key == name:
            return (text[:start] + new + text[end:]).encode()
    brace = text.index("{")
    rest = text[brace + 1 :]
    sep = "" if rest.strip() == "}" else ", "
    return (text[: brace + 1] + json.dumps(name) + ": " + new + sep + rest).encode()


def replace_json_model(body: bytes, data: dict[str, Any], model: str) -> bytes:
    """The JSON body with ``model`` renamed (``data`` is the parsed body, unused: kept for
    callers of the node's former signature)."""
    del data
    return replace_json_field(body, "model", model)


def media_type(content_type: str) -> str:
    """``multipart/form-data`` of ``multipart/form-data; boundary=x``, lower-cased."""
    return content_type.split(";", 1)[0].strip().lower()


# -- a whole request --------------------------------------------------------------------


def request_model(endpoint: Endpoint, content_type: str, body: bytes) -> str:
    """The model a request to ``endpoint`` asks for; 400 for a body of the wrong kind."""
    mime = media_type(content_type)
    if endpoint.body is BodyKind.MULTIPART:
        if mime != "multipart/form-data":
            raise InvalidRequest(
                f"{endpoint.path} takes a multipart/form-data body (got '{mime or 'none'}')."
            )
        return form_model(multipart_fields(body, boundary_of(content_type), ("model",)))
    if mime != "application/json":
        raise InvalidRequest(
            f"{endpoint.path} takes a JSON body: set 'Content-Type: application/json' "
            f"(got '{mime or 'none'}')."
        )
    return model_of(json_object(body))
