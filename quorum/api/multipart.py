"""Multipart form bodies (RFC 7578), read by one strict parser. Pure.

Node and relay find a form's fields with :func:`multipart_parts` only, so they
can never see two different models in one body (the key-limit bypass of
issue 14), and a body this module would read differently from a conforming
MIME parser is refused as ambiguous (400), never guessed at:

- A part's name comes from its one ``Content-Disposition: form-data``
  header, parsed as parameters: a ``name=`` in any other header counts for
  nothing.
- Refused: a preamble or epilogue, the boundary string anywhere but where it
  delimits (mid-line, after a bare LF, right after a part's blank line), bare
  CR or LF in a part's head, folded or repeated headers, ``name*``, a
  backslash in a ``name`` or before a closing quote, a text field read with a
  transfer encoding or a charset other than UTF-8, and a ``model`` field
  that is repeated or is a file.
- File parts are never decoded, and never copied: a :class:`Part` is where
  its value lies in the body. :func:`replace_multipart_field` replaces one
  value and keeps every other byte as it came.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from quorum.errors import InvalidRequest

MAX_PART_HEAD = 16 * 1024
MAX_PARTS = 1000

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'[ \t]*;[ \t]*(?:({_TOKEN}\*?)=(?:"([^"]*)"|({_TOKEN})))?[ \t]*')
_HEADER_NAME = re.compile(_TOKEN.encode())
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def parameters(value: str, what: str) -> tuple[str, dict[str, str]]:
    """A header value ``type; key=value; key="value"`` as (type, {key: value}).

    Keys are lower-cased. A repeated key, an unparsable parameter or a quoted
    value ending in a backslash (escape-aware parsers would read on) is a 400
    naming ``what``.
    """
    head = value.split(";", 1)[0]
    pos = len(head)
    found: dict[str, str] = {}
    while pos < len(value):
        match = _PARAM.match(value, pos)
        if match is None or match.end() == pos:
            raise InvalidRequest(f"The {what} header is malformed.")
        key, quoted, plain = match.groups()
        if key is not None:
            key = key.lower()
            if key in found:
                raise InvalidRequest(f"The {what} header gives '{key}' more than once.")
            if quoted is not None and quoted.endswith("\\"):
                raise InvalidRequest(f"The {what} header has an ambiguous quoted value.")
            found[key] = quoted if quoted is not None else plain
        pos = match.end()
    return head.strip().lower(), found


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type; 400 if missing or invalid."""
    _, params = parameters(content_type, "Content-Type")
    boundary = params.get("boundary")
    if boundary is None:
        raise InvalidRequest("The multipart Content-Type has no boundary.")
    if not _BCHARS.fullmatch(boundary):
        raise InvalidRequest(
            "The multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? (RFC 2046)."
        )
    return boundary


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multipart form: where its value lies in the body, and what it is."""

    name: str
    filename: str | None  # None for a text field
    headers: dict[str, str]  # lower-cased names; each at most once
    start: int  # the value is body[start:end]
    end: int

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def _malformed(why: str) -> InvalidRequest:
    return InvalidRequest(f"The multipart body is malformed: {why}.")


def _head(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            raise _malformed("a part's header has a bare CR or LF")
        if line[:1] in (b" ", b"\t"):
            raise _malformed("a part's header is folded over two lines")
        name, sep, value = line.partition(b":")
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise _malformed("a part's header line is not 'Name: value'")
        key = name.decode("ascii").lower()
        if key in headers:
            raise _malformed(f"a part gives its {name.decode('ascii')} header twice")
        headers[key] = value.decode("utf-8", "surrogateescape").strip(" \t")
    return headers


def _part(body: bytes, head_start: int, head_end: int, start: int, end: int) -> Part:
    headers = _head(body[head_start:head_end]) if head_end > head_start else {}
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _malformed("a part has no Content-Disposition header")
    kind, params = parameters(disposition, "Content-Disposition")
    if kind != "form-data":
        raise _malformed(f"a part's Content-Disposition is '{kind}', not 'form-data'")
    if "name*" in params:
        raise _malformed("a part is named with 'name*', which parsers read differently")
    name = params.get("name")
    if name is None:
        raise _malformed("a part's Content-Disposition has no name")
    if "\\" in name:
        raise _malformed("a part's name has a backslash, which parsers read differently")
    filename = params.get("filename", params.get("filename*"))
    return Part(name, filename, headers, start, end)


def multipart_parts(body: bytes, boundary: str) -> list[Part]:
    """Every part of a ``multipart/form-data`` body, strictly (see the module docstring).

    A ``model`` part that is repeated or is a file is a 400, whatever the
    caller looks for, so that no reader of the body can pick a different one.
    """
    delim = b"--" + boundary.encode("ascii")
    if body.startswith(delim):
        pos = 0
    elif body.startswith(b"\r\n" + delim):
        pos = 2
    else:
        raise _malformed("it does not start with its boundary")
    parts: list[Part] = []
    delimiters = [pos]
    while True:
        after = pos + len(delim)
        tail = body[after : after + 2]
        if tail == b"--":
            close = after + 2
            break
        if tail != b"\r\n":
            raise _malformed("a boundary line has more after the boundary")
        if len(parts) >= MAX_PARTS:
            raise _malformed(f"it has more than {MAX_PARTS} parts")
        head_start = after + 2
        if body.startswith(b"\r\n", head_start):
            head_end = head_start
        else:
            head_end = body.find(b"\r\n\r\n", head_start, head_start + MAX_PART_HEAD)
            if head_end < 0:
                raise _malformed("a part's headers do not end (or are over 16 KiB)")
        start = head_end + (2 if head_end == head_start else 4)
        nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            raise _malformed("it is not terminated by its closing boundary")
        parts.append(_part(body, head_start, head_end, start, nxt))
        pos = nxt + 2
        delimiters.append(pos)
    if body[close:] not in (b"", b"\r\n"):
        raise _malformed("there is data after its closing boundary")
    # The boundary may stand nowhere but where it delimits: a line-based or lenient parser
    # would split there too (after a bare LF, mid-line, right after a part's blank line).
    at = body.find(delim)
    for expected in delimiters:
        if at != expected:
            raise _malformed("its boundary appears inside a part")
        at = body.find(delim, at + 1)
    models = [p for p in parts if p.name == "model"]
    if len(models) > 1:
        raise InvalidRequest("The multipart body gives 'model' more than once.", param="model")
    if models and models[0].is_file:
        raise InvalidRequest("The 'model' field must be a text field, not a file.", param="model")
    return parts


_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _text(body: bytes, part: Part) -> str:
    """A text field's value as UTF-8 text; 400 for anything a reader could decode otherwise."""
    coding = part.headers.get("content-transfer-encoding", "binary").lower()
    if coding not in ("binary", "7bit", "8bit"):
        raise InvalidRequest(
            f"The multipart field '{part.name}' has Content-Transfer-Encoding: {coding[:32]}; "
            "send form fields as plain text."
        )
    _, params = parameters(part.headers.get("content-type", "text/plain"), "Content-Type")
    if params.get("charset", "utf-8").lower() not in _CHARSETS:
        raise InvalidRequest(f"The multipart field '{part.name}' must be UTF-8 text.")
    try:
        return body[part.start : part.end].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"The multipart field '{part.name}' is not UTF-8 text.") from None


def _fields(body: bytes, parts: list[Part], names: Collection[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in parts:
        if part.is_file:
            continue
        if part.name == "_charset_" and _text(body, part).strip().lower() not in _CHARSETS:
            raise InvalidRequest("The multipart form must be UTF-8 (its '_charset_' says not).")
        if part.name in names:
            if part.name in found:
                raise InvalidRequest(f"The multipart body gives '{part.name}' more than once.")
            found[part.name] = _text(body, part)
    return found


def multipart_fields(body: bytes, boundary: str, names: Collection[str]) -> dict[str, str]:
    """The text values of the named form fields; a named field given twice is a 400."""
    return _fields(body, multipart_parts(body, boundary), names)


def multipart_file(body: bytes, boundary: str, name: str) -> bytes | None:
    """The content of the first file part ``name`` (a copy of those bytes), or None."""
    for part in multipart_parts(body, boundary):
        if part.is_file and part.name == name:
            return body[part.start : part.end]
    return None


def replace_multipart_field(body: bytes, boundary: str, name: str, value: str) -> bytes:
    """``body`` with the text field ``name`` set to ``value``; all else byte-identical.

    No such field: ``body`` as it is. The field given twice: 400.
    """
    parts = multipart_parts(body, boundary)
    _fields(body, parts, (name,))  # refuses a repeated or undecodable field
    for part in parts:
        if part.name == name and not part.is_file:
            return body[: part.start] + value.encode() + body[part.end :]
    return body


def form_model(fields: dict[str, str]) -> str:
    """The ``model`` of a parsed form; 400 (param ``model``) if missing or empty."""
    model = fields.get("model")
    if model is None:
        raise InvalidRequest("You must provide a model parameter.", param="model")
    if not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    return model
