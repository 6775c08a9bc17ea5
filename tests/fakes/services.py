"""OpenAI-style media services: text-to-speech, images, speech-to-text.

Shapes follow OpenAI's API reference (platform.openai.com/docs/api-reference):
- ``POST /v1/audio/speech`` JSON ``{model, input, voice, response_format, speed}`` answers the
  audio bytes (``audio/mpeg`` for mp3, the default; ``audio/wav`` for wav), sent chunked;
- ``POST /v1/images/generations`` JSON ``{prompt, model, n, size, response_format}`` answers
  ``{"created", "data": [{"url"} | {"b64_json"}]}`` (dall-e-* default to ``url``,
  gpt-image-* always ``b64_json``); urls point back at this fake (``GET /files/<name>.png``);
- ``POST /v1/images/edits`` multipart (``image`` or ``image[]`` files, ``prompt``, optional
  ``mask``) answers the same envelope; the PNG's tEXt chunk ``source_sha256`` holds the
  sha256 of each uploaded image (comma separated) so a test proves the upload arrived intact;
- ``POST /v1/audio/transcriptions|translations`` multipart, ``response_format``
  ``json`` (``{"text", "usage": {"type": "duration", "seconds"}}``), ``text`` (text/plain),
  ``srt``, ``vtt``, ``verbose_json`` (``task, language, duration, text, segments[, words]``).
Errors are ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from typing import Any, ClassVar

from aiohttp import web

from ._media import SPEECH_CONTENT_TYPES, FormPart, make_png, parse_multipart, speech_bytes
from ._openai import (
    JSONDict,
    OpenAICompatEngine,
    parse_transcription,
    segment_tokens,
    segments_for,
    to_srt,
    to_vtt,
)


class OpenAIServiceEngine(OpenAICompatEngine):
    """Base of the media services: ``/v1/models`` plus OpenAI errors."""

    owned_by = "system"

    def error_body(self, status: int, message: str, param: str | None = None) -> web.Response:
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        return self.json_body(body, status)

    def new_service_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/v1/models", self.handle_models)
        return app

    def known_model(self, request: web.Request, requested: Any) -> str | web.Response:
        ids = self.model_ids
        if requested is None or requested == "":
            return ids[0] if ids else self.model_not_found(request, "")
        return self.resolve_model(request, requested, "media")


class FakeTTS(OpenAIServiceEngine):
    kind: ClassVar[str] = "tts"
    default_port: ClassVar[int] = 8880
    default_models: ClassVar[tuple[str, ...]] = ("tts-1",)

    def __init__(self, *, pieces: int = 4, **kwargs: Any) -> None:
        self.pieces = pieces
        """How many writes the audio body is sent in (chunked transfer encoding)."""
        super().__init__(**kwargs)

    def build_app(self) -> web.Application:
        app = self.new_service_app()
        app.router.add_post("/v1/audio/speech", self.handle_speech)
        return app

    async def handle_speech(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        model = self.known_model(request, body.get("model"))
        if isinstance(model, web.Response):
            return model
        text, voice = body.get("input"), body.get("voice")
        if not isinstance(text, str) or not text:
            return self.error_body(400, "[{'type': 'missing', 'loc': ('body', 'input')}]", "input")
        if not isinstance(voice, str) or not voice:
            return self.error_body(400, "[{'type': 'missing', 'loc': ('body', 'voice')}]", "voice")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_CONTENT_TYPES:
            return self.error_body(400, f"Invalid response_format: {fmt!r}", "response_format")
        self.on_generation(model)
        audio = speech_bytes(text, voice, str(fmt))
        return await self.send_chunked(request, audio, SPEECH_CONTENT_TYPES[str(fmt)], self.pieces)


class FakeImages(OpenAIServiceEngine):
    kind: ClassVar[str] = "image"
    default_port: ClassVar[int] = 7860
    default_models: ClassVar[tuple[str, ...]] = ("dall-e-2",)

    def __init__(self, **kwargs: Any) -> None:
        self._files: dict[str, bytes] = {}
        self._files_lock = threading.Lock()
        super().__init__(**kwargs)

    def build_app(self) -> web.Application:
        app = self.new_service_app()
        app.router.add_post("/v1/images/generations", self.handle_generations)
        app.router.add_post("/v1/images/edits", self.handle_edits)
        app.router.add_get("/files/{name}", self.handle_file)
        return app

    async def handle_file(self, request: web.Request) -> web.StreamResponse:
        with self._files_lock:
            data = self._files.get(request.match_info["name"])
        if data is None:
            return self.error_body(404, "No such file")
        return web.Response(body=data, content_type="image/png")

    def _envelope(self, model: str, images: list[bytes], response_format: Any) -> JSONDict:
        as_b64 = model.startswith("gpt-image") or response_format == "b64_json"
        data: list[JSONDict] = []
        for image in images:
            if as_b64:
                data.append({"b64_json": base64.b64encode(image).decode()})
                continue
            name = f"{hashlib.sha256(image).hexdigest()[:32]}.png"
            with self._files_lock:
                self._files[name] = image
            data.append({"url": f"{self.url}/files/{name}"})
        return {"created": int(time.time()), "data": data}

    @staticmethod
    def _count(raw: Any) -> int:
        try:
            return max(1, min(10, int(raw)))
        except (TypeError, ValueError):
            return 1

    async def handle_generations(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        model = self.known_model(request, body.get("model"))
        if isinstance(model, web.Response):
            return model
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return self.error_body(400, "Missing required parameter: 'prompt'.", "prompt")
        self.on_generation(model)
        images = [
            make_png(f"{model}|{prompt}|{i}".encode(), text={"prompt": prompt, "model": model})
            for i in range(self._count(body.get("n", 1)))
        ]
        return self.json_body(self._envelope(model, images, body.get("response_format", "url")))

    async def handle_edits(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/form-data"):
            return self.error_body(400, "Expected multipart/form-data")
        try:
            parts = parse_multipart(request.headers.get("Content-Type", ""), await request.read())
        except ValueError as exc:
            return self.error_body(400, str(exc))
        fields = {p.name: p.text() for p in parts if p.filename is None}
        uploads: list[FormPart] = [
            p for p in parts if p.filename is not None and p.name in ("image", "image[]")
        ]
        masks = [p for p in parts if p.filename is not None and p.name == "mask"]
        if not uploads:
            return self.error_body(400, "Missing required parameter: 'image'.", "image")
        prompt = fields.get("prompt", "")
        if not prompt:
            return self.error_body(400, "Missing required parameter: 'prompt'.", "prompt")
        model = self.known_model(request, fields.get("model"))
        if isinstance(model, web.Response):
            return model
        self.on_generation(model)
        shas = ",".join(hashlib.sha256(p.data).hexdigest() for p in uploads)
        text = {"prompt": prompt, "model": model, "source_sha256": shas}
        if masks:
            text["mask_sha256"] = hashlib.sha256(masks[0].data).hexdigest()
        images = [
            make_png(f"{shas}|{prompt}|{i}".encode(), text=text)
            for i in range(self._count(fields.get("n", "1")))
        ]
        return self.json_body(self._envelope(model, images, fields.get("response_format", "url")))


class FakeWhisper(OpenAIServiceEngine):
    """A generic OpenAI-compatible speech-to-text server (all five response formats)."""

    kind: ClassVar[str] = "stt"
    default_port: ClassVar[int] = 8000
    default_models: ClassVar[tuple[str, ...]] = ("whisper-1",)

    def build_app(self) -> web.Application:
        app = self.new_service_app()
        app.router.add_post("/v1/audio/transcriptions", self.handle_transcriptions)
        app.router.add_post("/v1/audio/translations", self.handle_translations)
        return app

    async def handle_transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._speech_to_text(request, translate=False)

    async def handle_translations(self, request: web.Request) -> web.StreamResponse:
        return await self._speech_to_text(request, translate=True)

    async def _speech_to_text(self, request: web.Request, *, translate: bool) -> web.StreamResponse:
        parsed = parse_transcription(request, await request.read())
        if isinstance(parsed, str):
            return self.error_body(400, parsed, "file")
        model = self.known_model(request, parsed.model)
        if isinstance(model, web.Response):
            return model
        self.on_generation(model)
        text, duration = parsed.text, parsed.duration
        segments = segments_for(text, duration)
        fmt = parsed.response_format
        if fmt == "json":
            out: JSONDict = {"text": text}
            if not translate:
                out["usage"] = {"type": "duration", "seconds": math.ceil(duration)}
            return self.json_body(out)
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain", charset="utf-8")
        if fmt == "srt":
            return web.Response(text=to_srt(segments), content_type="text/plain", charset="utf-8")
        if fmt == "vtt":
            return web.Response(text=to_vtt(segments), content_type="text/plain", charset="utf-8")
        if fmt != "verbose_json":
            return self.error_body(400, f"Invalid response_format: {fmt!r}", "response_format")
        verbose: JSONDict = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": duration,
            "text": text,
            "segments": [
                {
                    "id": s.id,
                    "seek": 0,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": segment_tokens(s.text),
                    "temperature": 0.0,
                    "avg_logprob": -0.25,
                    "compression_ratio": 1.2,
                    "no_speech_prob": 0.01,
                }
                for s in segments
            ],
        }
        if "word" in parsed.granularities:
            words: list[JSONDict] = []
            for s in segments:
                parts = s.text.split()
                step = (s.end - s.start) / len(parts)
                for i, word in enumerate(parts):
                    start = round(s.start + i * step, 3)
                    words.append({"word": word, "start": start, "end": round(start + step, 3)})
            verbose["words"] = words
        if not translate:
            verbose["usage"] = {"type": "duration", "seconds": math.ceil(duration)}
        return self.json_body(verbose)
