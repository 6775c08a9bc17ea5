"""Shared OpenAI-compatible responders.

:class:`OpenAICompatEngine` serves ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings`` with OpenAI's reference shapes
(platform.openai.com API reference, Chat Completions / Completions / Embeddings).
Each engine subclass overrides only the pieces where the real engine differs: ids,
extra fields, how the first/last SSE events look, the error body, model matching.

Generation is deterministic: the reply is ``engine.reply(last user message)``
(``"You said: ..."`` by default), cut into ``engine.chunks`` content events when
streamed; token counts are whitespace-separated words.

Every chat, completion and embedding takes a slot from ``engine.pool_for(model)`` (the
generic server: an unlimited pool) and holds it ``gen_delay`` seconds, or, streamed,
while its chunks go out; :meth:`OpenAICompatEngine.refuse` may turn a request away
instead of queueing it (Ollama's full queue).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from ._core import FakeEngine, compact_json
from ._media import FormPart, inspect_audio, parse_multipart, transcript_for
from ._slots import SlotPool
from ._turn import ToolPlan, ToolSpec, params_of, plan_turn
from ._turn import count_words as count_words

JSONDict = dict[str, Any]
DONE_FRAME = b"data: [DONE]\n\n"
MIXED_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


_TOKEN = re.compile(r"\s*\S+")


def split_pieces(text: str, count: int) -> tuple[str, ...]:
    """Cut ``text`` into ``count`` contiguous non-empty pieces whose join is ``text``.

    Cuts at word boundaries when there are enough words, else between characters;
    a text shorter than ``count`` characters gives one piece per character.
    """
    if count <= 1 or not text:
        return (text,)
    tokens = _TOKEN.findall(text)
    if tokens:
        tokens[-1] += text[len("".join(tokens)) :]  # trailing whitespace
    if len(tokens) < count:
        tokens = list(text)
        count = min(count, len(tokens))
    base, extra = divmod(len(tokens), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        pieces.append("".join(tokens[start : start + size]))
        start += size
    return tuple(pieces)


def content_text(content: Any) -> str:
    """The text of a message ``content`` (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def fake_embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit-ish vector derived from sha256(text)."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}|{text}".encode()).digest()
        out.extend(round(b / 127.5 - 1.0, 6) for b in digest)
        counter += 1
    return out[:dims]


def floats_to_base64(vector: list[float]) -> str:
    """OpenAI / Ollama ``encoding_format=base64``: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@dataclass(frozen=True)
class Generation:
    """One planned generation, rendered by the engine into its own wire shapes."""

    model: str
    prompt: str
    prompt_tokens: int
    text: str
    pieces: tuple[str, ...]
    completion_tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool
    created: int
    call: ToolPlan | None = None  # the model calls a tool instead of answering in text
    reasoning: tuple[str, ...] = ()  # thoughts before the answer, in streamed pieces

    @property
    def usage(self) -> JSONDict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def chat_tools(body: JSONDict) -> tuple[ToolSpec, ...]:
    """The function tools a chat request offers (none when ``tool_choice`` is none)."""
    if body.get("tool_choice") == "none":
        return ()
    specs = []
    for tool in body.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            specs.append(ToolSpec(fn["name"], params_of(fn.get("parameters"))))
    return tuple(specs)


def plan_generation(
    engine: FakeEngine,
    body: JSONDict,
    model: str,
    *,
    chat: bool,
    tools: bool = False,
    reasoning: str = "",
) -> Generation:
    """The generation for a chat or completion request (see :mod:`._turn`); with ``tools``
    the engine calls the tools a chat request offers; a chat starts with ``reasoning``."""
    tool_result = None
    offered: tuple[ToolSpec, ...] = ()
    if chat:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        texts = [content_text(m.get("content")) for m in messages]
        users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
        prompt = users[-1] if users else (texts[-1] if texts else "")
        prompt_tokens = sum(count_words(t) for t in texts)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if tools:
            offered = chat_tools(body)
            if messages and messages[-1].get("role") == "tool":
                tool_result = texts[-1]
    else:
        raw = body.get("prompt", "")
        prompt = " ".join(str(p) for p in raw) if isinstance(raw, list) else str(raw)
        prompt_tokens = count_words(prompt)
        limit = body.get("max_tokens")
    turn = plan_turn(
        engine.reply,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        tools=offered,
        tool_result=tool_result,
        limit=limit,
    )
    options = body.get("stream_options")
    return Generation(
        model=model,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        text=turn.text,
        pieces=split_pieces(turn.text, engine.chunks),
        completion_tokens=turn.completion_tokens,
        finish_reason=turn.finish,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        created=int(time.time()),
        call=turn.call,
        reasoning=split_pieces(reasoning, engine.chunks) if chat and reasoning else (),
    )


def random_alnum(length: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


class OpenAICompatEngine(FakeEngine):
    """OpenAI reference shapes plus the shared handlers; engines override the details."""

    owned_by = "openai"
    headers_before_slot: ClassVar[bool] = False
    supports_tools: ClassVar[bool] = False
    """Whether the fake's chat completions render tool calls (vLLM's, with a tool parser);
    without, a chat answers in text as if no tools were offered."""
    """Whether a streamed answer sends its status and headers before it has a slot (vLLM
    and llama-cpp-python return the streaming response at once) or only once it runs."""

    def __init__(self, *, call_tools: bool = True, reasoning: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reasoning = reasoning
        """Thoughts a chat answer starts with (vLLM's reasoning parser: ``reasoning_content``),
        on engines whose fake renders them; empty: none."""
        self.call_tools = call_tools
        """Whether the model calls a tool the request offers (see ``_turn``); off, it answers
        in text whatever tools it is offered. Chat completions call tools only on engines
        that ``supports_tools``; the native APIs (Responses, Messages, Ollama's) always can."""
        self._any_pool = self.new_pool(None)

    # -- capacity -----------------------------------------------------------------------

    def pool_for(self, model: str) -> SlotPool:
        """The pool a generation of ``model`` takes its slot from."""
        return self._any_pool

    def slot_pools(self) -> list[SlotPool]:
        return [self._any_pool]

    def refuse(self, request: web.Request, model: str) -> web.Response | None:
        """The answer to a request the engine will not even queue; None: it queues."""
        return None

    @contextlib.asynccontextmanager
    async def generation_slot(self, request: web.Request, model: str) -> AsyncIterator[bool]:
        """Hold a slot for a generation; yields False if the client left while it waited
        (the engine then drops the request, as the real ones do)."""
        async with self.pool_for(model).slot():
            gone = self.client_gone(request)
            if gone and not self._stopping:
                self._note_cancel()
            yield not gone

    async def run_whole(
        self, request: web.Request, model: str, answer: Callable[[], web.StreamResponse]
    ) -> web.StreamResponse:
        """A non-streamed generation: wait for a slot, hold it ``gen_delay``, answer."""
        refusal = self.refuse(request, model)
        if refusal is not None:
            return refusal
        async with self.generation_slot(request, model) as present:
            if not present:
                return web.Response(status=499)  # nobody is there to read it
            await self.hold_generation()
            return answer()

    async def run_stream(
        self,
        request: web.Request,
        model: str,
        frames: Sequence[bytes],
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """A streamed generation: holds its slot while its frames go out (``headers``:
        the stream's own, SSE's by default)."""
        refusal = self.refuse(request, model)
        if refusal is not None:
            return refusal
        head = headers or self.sse_headers()
        response: web.StreamResponse | None = None
        if self.headers_before_slot:
            response = await self.open_sse(request, head)
        async with self.generation_slot(request, model) as present:
            if not present:
                return response if response is not None else web.Response(status=499)
            if response is None:
                response = await self.open_sse(request, head)
            if await self.write_sse(request, response, frames):
                await self.end_sse(response)
            return response

    # -- ids and encoding ---------------------------------------------------------------

    def chat_id(self) -> str:
        return f"chatcmpl-{random_alnum(29, MIXED_ALNUM)}"

    def completion_id(self) -> str:
        return f"cmpl-{random_alnum(29, MIXED_ALNUM)}"

    def dumps(self, obj: Any) -> str:
        return compact_json(obj)

    def sse_frame(self, obj: Any) -> bytes:
        return f"data: {self.dumps(obj)}\n\n".encode()

    def sse_headers(self) -> dict[str, str]:
        return {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}

    def json_body(self, data: Any, status: int = 200) -> web.Response:
        return self.json_response(data, status, dumps=self.dumps)

    # -- errors -------------------------------------------------------------------------

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return self.json_body(body, status)

    def model_not_found(self, request: web.Request, model: str) -> web.Response:
        body = {
            "error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
        return self.json_body(body, 404)

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        """The model name the response reports, or an error response."""
        if not isinstance(requested, str) or not requested:
            return self.error_response(request, 400, "you must provide a model parameter")
        spec = self.find_model(requested)
        if spec is None:
            return self.model_not_found(request, requested)
        return spec.id

    def on_generation(self, model: str) -> None:
        if self.find_model(model) is not None:
            self.load(model)

    # -- reference shapes ---------------------------------------------------------------

    def model_entry(self, spec_id: str, created: int) -> JSONDict:
        return {"id": spec_id, "object": "model", "created": created, "owned_by": self.owned_by}

    def models_response(self) -> JSONDict:
        created = int(time.time())
        return {"object": "list", "data": [self.model_entry(m, created) for m in self.model_ids]}

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": g.text},
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                }
            ],
            "usage": g.usage,
        }

    def chunk_base(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": g.created,
            "model": g.model,
        }

    def chat_choice(self, delta: JSONDict, finish: str | None) -> JSONDict:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = self.chunk_base(g, cid)
        out = [{**base, "choices": [self.chat_choice({"role": "assistant", "content": ""}, None)]}]
        out += [{**base, "choices": [self.chat_choice({"content": p}, None)]} for p in g.pieces]
        out.append({**base, "choices": [self.chat_choice({}, g.finish_reason)]})
        if g.include_usage:
            out.append({**base, "choices": [], "usage": g.usage})
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        return {
            "id": cid,
            "object": "text_completion",
            "created": g.created,
            "model": g.model,
            "choices": [
                {"text": g.text, "index": 0, "logprobs": None, "finish_reason": g.finish_reason}
            ],
            "usage": g.usage,
        }

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = {"id": cid, "object": "text_completion", "created": g.created, "model": g.model}

        def choice(text: str, finish: str | None) -> JSONDict:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        out = [{**base, "choices": [choice(p, None)]} for p in g.pieces]
        out.append({**base, "choices": [choice("", g.finish_reason)]})
        if g.include_usage:
            out.append({**base, "choices": [], "usage": g.usage})
        return out

    def embeddings_response(
        self, model: str, vectors: list[list[float]] | list[str], prompt_tokens: int
    ) -> JSONDict:
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }

    # -- handlers -----------------------------------------------------------------------

    async def read_json(self, request: web.Request) -> JSONDict | web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self.error_response(request, 400, f"invalid JSON body: {exc}")
        if not isinstance(body, dict):
            return self.error_response(request, 400, "request body must be a JSON object")
        return body

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        return self.json_body(self.models_response())

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        if chat and not isinstance(body.get("messages"), list):
            return self.error_response(request, 400, "'messages' is a required property")
        if not chat and "prompt" not in body:
            return self.error_response(request, 400, "'prompt' is a required property")
        model = self.resolve_model(request, body.get("model"), "chat" if chat else "completion")
        if isinstance(model, web.Response):
            return model
        g = plan_generation(
            self,
            body,
            model,
            chat=chat,
            tools=self.call_tools and self.supports_tools,
            reasoning=self.reasoning,
        )
        self.on_generation(model)
        if chat:
            cid = self.chat_id()
            chunks, whole = self.chat_chunks, self.chat_response
        else:
            cid = self.completion_id()
            chunks, whole = self.completion_chunks, self.completion_response
        if g.stream:
            frames = [self.sse_frame(c) for c in chunks(g, cid)] + [DONE_FRAME]
            return await self.run_stream(request, model, frames)
        return await self.run_whole(request, model, lambda: self.json_body(whole(g, cid)))

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def handle_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        model = self.resolve_model(request, body.get("model"), "embedding")
        if isinstance(model, web.Response):
            return model
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            inputs = [str(x) for x in raw]
        elif isinstance(raw, list) and raw:  # token arrays
            inputs = [" ".join(map(str, x)) if isinstance(x, list) else str(x) for x in raw]
        else:
            return self.error_response(request, 400, "invalid input")
        vectors = [fake_embedding(text, self.embedding_dims) for text in inputs]
        encoded: list[list[float]] | list[str] = vectors
        if body.get("encoding_format") == "base64":
            encoded = [floats_to_base64(v) for v in vectors]
        self.on_generation(model)
        tokens = sum(count_words(t) for t in inputs)
        return await self.run_whole(
            request, model, lambda: self.json_body(self.embeddings_response(model, encoded, tokens))
        )

    def add_openai_routes(
        self,
        app: web.Application,
        *,
        completions: bool = True,
        embeddings: bool = True,
    ) -> None:
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        if completions:
            app.router.add_post("/v1/completions", self.handle_completions)
        if embeddings:
            app.router.add_post("/v1/embeddings", self.handle_embeddings)


# -- audio (speech to text) shared by vLLM and the generic STT service ---------------------


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    audio: bytes
    filename: str | None
    response_format: str
    language: str | None
    prompt: str
    stream: bool
    granularities: tuple[str, ...]
    fields: dict[str, str]

    @property
    def text(self) -> str:
        return transcript_for(self.audio)

    @property
    def duration(self) -> float:
        return inspect_audio(self.audio).duration


def parse_transcription(request: web.Request, body: bytes) -> TranscriptionRequest | str:
    """Parse the multipart upload; a string is the reason it was rejected."""
    if not request.content_type.startswith("multipart/form-data"):
        return "expected a multipart/form-data body"
    try:
        parts = parse_multipart(request.headers.get("Content-Type", ""), body)
    except ValueError as exc:
        return str(exc)
    files: dict[str, FormPart] = {p.name: p for p in parts if p.filename is not None}
    fields = {p.name: p.text() for p in parts if p.filename is None}
    upload = files.get("file")
    if upload is None:
        return "field 'file' (the audio) is required"
    granularities = tuple(
        p.text()
        for p in parts
        if p.name in ("timestamp_granularities[]", "timestamp_granularities")
    )
    return TranscriptionRequest(
        model=fields.get("model", ""),
        audio=upload.data,
        filename=upload.filename,
        response_format=fields.get("response_format", "json"),
        language=fields.get("language") or None,
        prompt=fields.get("prompt", ""),
        stream=fields.get("stream", "false").lower() == "true",
        granularities=granularities,
        fields=fields,
    )


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str


def segments_for(text: str, duration: float, words_per_segment: int = 4) -> list[Segment]:
    """Split ``text`` into segments with evenly spaced timestamps across ``duration``."""
    words = text.split()
    if not words:
        return []
    groups = [words[i : i + words_per_segment] for i in range(0, len(words), words_per_segment)]
    span = duration / len(groups) if duration > 0 else 1.0
    return [
        Segment(i, round(i * span, 3), round((i + 1) * span, 3), " " + " ".join(group))
        for i, group in enumerate(groups)
    ]


def _clock(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def to_srt(segments: list[Segment]) -> str:
    return "".join(
        f"{s.id + 1}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
        for s in segments
    )


def to_vtt(segments: list[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments
    )


def segment_tokens(text: str) -> list[int]:
    return [50364 + (int(hashlib.sha256(w.encode()).hexdigest(), 16) % 1000) for w in text.split()]


def uuid_hex() -> str:
    return uuid.uuid4().hex
