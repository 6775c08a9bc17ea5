"""Deterministic media for the fakes: WAV/PNG writers, speech bytes, multipart parsing.

Everything here is a pure function of its inputs so a test can compute the bytes it
expects and compare them with what came back through the node, byte for byte.

The WAV files carry their text inside the samples (a short magic header, the UTF-8
length, one sample per byte, then a tone), so ``make_wav("hi")`` uploaded to any fake
STT service is transcribed as ``"hi"`` and a WAV made by the fake TTS service round-trips.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import wave
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

SAMPLE_RATE: Final = 16_000
_MAGIC: Final = (0x7A11, 0x0F4E, 0x1337, 0x2A2A)


def make_wav(
    text: str = "hello from quorum",
    *,
    seconds: float = 0.25,
    sample_rate: int = SAMPLE_RATE,
    tone_hz: float = 440.0,
) -> bytes:
    """A real mono 16-bit PCM WAV file (stdlib ``wave``) whose samples encode ``text``.

    It lasts ``seconds`` (longer if the text needs more samples than that).
    """
    payload = text.encode()
    if len(payload) >= 1 << 30:
        raise ValueError("text too long to embed in a WAV")
    samples = [*_MAGIC, len(payload) >> 15, len(payload) & 0x7FFF, *payload]
    total = max(len(samples), int(seconds * sample_rate))
    step = 2 * math.pi * tone_hz / sample_rate
    samples.extend(int(8000 * math.sin(step * i)) for i in range(len(samples), total))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return buf.getvalue()


@dataclass(frozen=True)
class AudioInfo:
    """What the fake STT services read from an upload."""

    duration: float
    text: str | None
    """The text embedded by :func:`make_wav`, or None for any other audio."""
    sha256: str
    is_wav: bool


def inspect_audio(data: bytes) -> AudioInfo:
    sha = hashlib.sha256(data).hexdigest()
    try:
        with wave.open(io.BytesIO(data), "rb") as src:
            rate, frames = src.getframerate(), src.getnframes()
            width, channels = src.getsampwidth(), src.getnchannels()
            raw = src.readframes(frames)
    except (wave.Error, EOFError, struct.error):
        # Not a WAV: pretend it is 16 kHz 16-bit mono so the duration is plausible.
        return AudioInfo(len(data) / (2 * SAMPLE_RATE), None, sha, False)
    duration = frames / rate if rate else 0.0
    count = len(raw) // 2
    if width != 2 or channels != 1 or count < 6:
        return AudioInfo(duration, None, sha, True)
    samples = struct.unpack(f"<{count}h", raw[: count * 2])
    if tuple(samples[:4]) != _MAGIC:
        return AudioInfo(duration, None, sha, True)
    length = (samples[4] << 15) | samples[5]
    body = samples[6 : 6 + length]
    if len(body) != length or any(not 0 <= s <= 255 for s in body):
        return AudioInfo(duration, None, sha, True)
    try:
        text = bytes(body).decode()
    except UnicodeDecodeError:
        return AudioInfo(duration, None, sha, True)
    return AudioInfo(duration, text, sha, True)


def transcript_for(data: bytes) -> str:
    """The text every fake STT service answers for ``data``."""
    info = inspect_audio(data)
    return info.text if info.text is not None else f"audio {info.sha256[:12]}"


# -- speech (TTS) -------------------------------------------------------------------------

SPEECH_CONTENT_TYPES: Final[Mapping[str, str]] = {
    # mp3 and wav are what OpenAI's /v1/audio/speech answers (audio/mpeg, audio/wav);
    # the others are the usual MIME types for those formats (not verified per service).
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}
_VOICE_HZ: Final = {"alloy": 220.0, "echo": 330.0, "fable": 440.0, "onyx": 165.0, "nova": 523.0}


def _stream(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}|{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def speech_bytes(text: str, voice: str = "alloy", response_format: str = "mp3") -> bytes:
    """The exact bytes the fake TTS service answers for this input.

    ``wav`` is a real WAV (via :func:`make_wav`, so it can be fed back to a fake STT);
    ``pcm`` is that WAV's raw frames; the others are a format-looking magic prefix
    followed by bytes derived from (format, voice, text).
    """
    hz = _VOICE_HZ.get(voice, 200.0 + (int(hashlib.sha256(voice.encode()).hexdigest(), 16) % 400))
    seconds = 0.05 + 0.01 * len(text.split())
    if response_format == "wav":
        return make_wav(text, seconds=seconds, sample_rate=24_000, tone_hz=hz)
    if response_format == "pcm":
        return make_wav(text, seconds=seconds, sample_rate=24_000, tone_hz=hz)[44:]
    prefix = {
        "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64",
        "opus": b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00OpusHead",
        "aac": b"\xff\xf1\x50\x80\x00\x1f\xfc",
        "flac": b"fLaC\x00\x00\x00\x22",
    }.get(response_format, b"")
    return prefix + _stream(f"{response_format}|{voice}|{text}", 256 + 16 * len(text))


# -- PNG ----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(seed: bytes, *, size: int = 4, text: Mapping[str, str] | None = None) -> bytes:
    """A valid ``size``x``size`` RGB PNG whose colours derive from ``seed``.

    ``text`` is stored as tEXt chunks (read back with :func:`png_text`).
    """
    colours = _stream(hashlib.sha256(seed).hexdigest(), 3 * size * size)
    rows = b"".join(b"\x00" + colours[3 * size * y : 3 * size * (y + 1)] for y in range(size))
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    )
    for key, value in (text or {}).items():
        out += _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))
    return out + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (raises ValueError if ``data`` is not a PNG)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    out: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out


# -- multipart/form-data ------------------------------------------------------------------


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    def text(self) -> str:
        return self.data.decode()


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'\bfilename="([^"]*)"', re.IGNORECASE)


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """Parse a multipart/form-data body exactly as it arrived (no re-encoding).

    Written by hand on purpose: the fakes record the raw body first, and this parser
    works on those bytes, so it also proves what was on the wire.
    """
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode()
    sections = body.split(delimiter)
    if len(sections) < 3:
        raise ValueError("multipart body has no parts")
    parts: list[FormPart] = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            break  # the close delimiter
        section = section.removeprefix(b"\r\n")
        section = section.removesuffix(b"\r\n")  # the CRLF before a delimiter is not data
        raw_headers, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header block")
        headers: dict[str, bytes] = {}
        for line in raw_headers.split(b"\r\n"):
            key, _, value = line.partition(b":")
            headers[key.strip().lower().decode("latin-1")] = value.strip()
        disposition = headers.get("content-disposition", b"")
        name = _NAME.search(disposition)
        filename = _FILENAME.search(disposition)
        ctype = headers.get("content-type")
        parts.append(
            FormPart(
                name=name.group(1).decode() if name else "",
                filename=filename.group(1).decode() if filename else None,
                content_type=ctype.decode("latin-1") if ctype is not None else None,
                data=data,
            )
        )
    return parts
