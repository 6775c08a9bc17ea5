"""Multipart bodies built by hand (to say exactly which bytes go out), and a reference reader.

The reference is the stdlib's ``email`` parser: it reads a part's name as a
conforming, escape-aware MIME parser does (quoted pairs, RFC 2231 ``name*``,
Content-Transfer-Encoding), so a body that ``quorum.api.multipart`` accepts must
mean the same to it.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field

BOUNDARY = "qb-7f3a"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass(frozen=True)
class FormPart:
    name: str
    value: bytes
    filename: str | None = None
    extra: tuple[str, ...] = field(default=())  # header lines before Content-Disposition
    disposition: str | None = None  # the whole Content-Disposition value, when given

    def head(self) -> bytes:
        disposition = self.disposition or (
            f'form-data; name="{self.name}"'
            + ("" if self.filename is None else f'; filename="{self.filename}"')
        )
        lines = [*self.extra, f"Content-Disposition: {disposition}"]
        return "".join(f"{line}\r\n" for line in lines).encode()


def form(*parts: FormPart, boundary: str = BOUNDARY) -> bytes:
    out = b""
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part.head() + b"\r\n" + part.value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def text(name: str, value: str, *extra: str) -> FormPart:
    return FormPart(name, value.encode(), extra=extra)


def audio(name: str = "file", data: bytes = b"RIFF\x00\xff\r\n--almost\r\n") -> FormPart:
    return FormPart(name, data, filename="a.wav", extra=("Content-Type: audio/wav",))


def reference_models(body: bytes, content_type: str = CONTENT_TYPE) -> list[str] | None:
    """The ``model`` text fields the email parser sees, in order; None if it finds no form."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        return None
    found: list[str] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        if name == "model" and filename is None:  # not get_filename(): it reads Content-Type too
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append(payload.decode("utf-8", "replace"))
    return found
