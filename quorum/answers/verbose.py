"""A ``verbose_json`` transcription made from a plain ``json`` one (pure).

Engines without timestamps (``features`` of the service lacks ``timestamps``)
cannot give segments. The node then asks for ``json`` (``{"text": ...}``) and
answers the object OpenAI's SDKs expect of ``verbose_json``: ``task``,
``language``, ``duration``, ``text`` and empty ``segments``, with the language
and duration where they are known (the request's ``language``; the length of a
WAV upload, else the engine's duration usage). ``X-Quorum-Downgraded`` tells
the client what was dropped.
"""

from __future__ import annotations

import io
import wave
from typing import Any

DOWNGRADED = "verbose_json without segments or words (the engine has no timestamps)"


def wav_seconds(audio: bytes | None) -> float | None:
    """The duration of a WAV file, or None for anything else."""
    if not audio or not audio.startswith(b"RIFF"):
        return None
    try:
        with wave.open(io.BytesIO(audio)) as w:
            rate = w.getframerate()
            return round(w.getnframes() / rate, 3) if rate else None
    except (wave.Error, EOFError):
        return None


def verbose_from_json(
    answer: Any, *, task: str, language: str | None, audio: bytes | None
) -> dict[str, Any] | None:
    """The ``verbose_json`` object for an engine's ``json`` answer (None if it has no text)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        return None
    duration = wav_seconds(audio)  # exact; a duration usage is billing seconds, rounded up
    usage = answer.get("usage")
    if duration is None and isinstance(usage, dict) and usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            duration = float(seconds)
    out: dict[str, Any] = {
        "task": task,
        "language": answer.get("language") or language or "unknown",
        "duration": duration if duration is not None else 0.0,
        "text": answer["text"],
        "segments": [],
    }
    if isinstance(usage, dict):
        out["usage"] = usage
    return out
