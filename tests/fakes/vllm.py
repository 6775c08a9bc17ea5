"""Fake vLLM OpenAI server (``vllm serve``, default port 8000).

Shapes follow vllm-project/vllm ``vllm/entrypoints/openai``:
- ``models/serving.py`` + ``engine/protocol.py``: ModelCard
  ``{id, object: "model", created, owned_by: "vllm", root, parent: null, max_model_len,
  permission: [ModelPermission]}`` (one card per ``--served-model-name``);
- errors ``{"error": {"message", "type", "param", "code": <int status>}}``; unknown model is
  404 ``The model `x` does not exist.`` type ``NotFoundError`` param ``model``; a request
  without ``model`` uses the first served name;
- chat stream (PR #19662 capture): first chunk ``delta {"role": "assistant", "content": ""}``,
  content chunks ``{"content": ...}``, last ``{"content": ""}`` with finish_reason and
  ``stop_reason: null``, usage chunk ``choices: []`` only with ``include_usage``;
- ``speech_to_text/speech_to_text.py`` + ``api_router.py``: response_format must be
  ``json|text|verbose_json`` (srt/vtt -> 400); ``json`` and ``text`` both answer JSON
  ``{"text", "usage": {"type": "duration", "seconds"}}`` (translations: no usage);
  verbose_json has ``duration`` as a *string*, ``segments`` and ``words: null``;
  ``stream=true`` answers ``transcription.chunk`` SSE.
``POST /tokenize`` (``serve/tokenize``) counts a ``prompt`` or chat ``messages`` (the chat
template applied): ``{count, max_model_len, tokens, token_strs}``.
``/health`` answers 200 with an empty body, ``/version`` ``{"version"}``; unknown paths get
FastAPI's ``{"detail": "Not Found"}``. A model serves one task family (``tasks``):
``generate`` (chat, completions), ``embed`` (embeddings) or ``transcription`` (audio).

Capacity: the scheduler runs up to ``--max-num-seqs`` requests at once (``max_num_seqs``,
256 -- the V1 default for ``vllm serve``; some large GPUs get more); the rest wait in its
waiting queue, first come first served, never refused. ``/metrics`` publishes them as the
``vllm:num_requests_running`` and ``vllm:num_requests_waiting`` gauges (labels ``engine``
and ``model_name``), with ``vllm:kv_cache_usage_perc``. A streamed answer is returned at
once, so a queued stream already has its 200 and headers, and its first chunk comes when
it is scheduled.

Tools: with tools offered, the model calls the first one (``--enable-auto-tool-choice``;
see ``_turn``): ``message.tool_calls`` with ids ``chatcmpl-tool-<hex>``, ``content: null``,
finish_reason ``tool_calls``; streamed, the call's id and name come first, then its
arguments in pieces. ``reasoning="..."`` makes every chat answer start with those thoughts
(``--reasoning-parser``): ``message.reasoning_content``, streamed as ``reasoning_content``
deltas before the content. ``native_apis=("responses", "messages")`` also serves
``/v1/responses`` and Anthropic's ``/v1/messages`` (``_native``), as recent vLLM does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any, ClassVar

from aiohttp import web

from ._native import add_native_routes
from ._openai import (
    DONE_FRAME,
    Generation,
    JSONDict,
    OpenAICompatEngine,
    TranscriptionRequest,
    content_text,
    parse_transcription,
    segment_tokens,
    segments_for,
    split_pieces,
    uuid_hex,
)
from ._slots import SlotPool

ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "BadRequestError",
    500: "InternalServerError",
    501: "NotImplementedError",
}
API_NAMES = {
    "chat": "Chat Completions",
    "completion": "Completions",
    "embedding": "Embeddings",
    "transcription": "Transcriptions",
    "translation": "Translations",
}
TASK_OF = {
    "chat": "generate",
    "completion": "generate",
    "embedding": "embed",
    "transcription": "transcription",
    "translation": "transcription",
}


class FakeVLLM(OpenAICompatEngine):
    kind: ClassVar[str] = "vllm"
    default_port: ClassVar[int] = 8000
    default_models: ClassVar[tuple[str, ...]] = ("Qwen/Qwen3-0.6B",)
    owned_by = "vllm"
    headers_before_slot: ClassVar[bool] = True
    supports_tools: ClassVar[bool] = True

    def __init__(
        self,
        *,
        tasks: Collection[str] = ("generate",),
        max_model_len: int = 32768,
        root: str | None = None,
        version: str = "0.10.1.1",
        max_num_seqs: int = 256,
        native_apis: Collection[str] = (),
        kv_blocks: int = 4096,
        kv_blocks_per_seq: int = 16,
        **kwargs: Any,
    ) -> None:
        self.kv_blocks = kv_blocks
        self.kv_blocks_per_seq = kv_blocks_per_seq
        self.tasks = frozenset(tasks)
        self.native_apis = frozenset(native_apis)
        """Foreign APIs served natively beside chat completions: responses, messages."""
        self.max_model_len = max_model_len
        self.root = root
        self.version = version
        super().__init__(**kwargs)
        self._seqs = self.new_pool(max_num_seqs)

    @property
    def max_num_seqs(self) -> int:
        return self._seqs.size or 0

    def pool_for(self, model: str) -> SlotPool:
        return self._seqs

    def slot_pools(self) -> list[SlotPool]:
        return [self._seqs]

    def build_app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/version", self.handle_version)
        app.router.add_get("/metrics", self.handle_metrics)
        self.add_openai_routes(app)
        app.router.add_post("/v1/audio/transcriptions", self.handle_transcriptions)
        app.router.add_post("/v1/audio/translations", self.handle_translations)
        add_native_routes(self, app, self.native_apis)
        app.router.add_post("/tokenize", self.handle_tokenize)
        app.router.add_route("*", "/{tail:.*}", self.handle_unknown)
        return app

    async def handle_tokenize(self, request: web.Request) -> web.StreamResponse:
        """``POST /tokenize`` (``serve/tokenize``): a ``prompt``, or chat ``messages`` put
        through the model's chat template (``add_generation_prompt`` true by default);
        ``{count, max_model_len, tokens, token_strs}``. The fake's template adds no token,
        and a token is a word, as its chat answers count them."""
        body = await self.read_json(request)
        if isinstance(body, web.Response):
            return body
        model = self.resolve_model(request, body.get("model"), "chat")
        if isinstance(model, web.Response):
            return model
        messages = body.get("messages")
        if isinstance(messages, list):
            if body.get("continue_final_message") and body.get("add_generation_prompt", True):
                message = "Cannot set both `continue_final_message` and `add_generation_prompt`"
                return self.error_body(400, message + " to True.")
            texts = [content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        elif isinstance(body.get("prompt"), str):
            texts = [body["prompt"]]
        else:
            return self.error_body(400, "Field required: prompt or messages")
        words = [w for t in texts for w in t.split()]
        strs = words if body.get("return_token_strs") else None
        tokens = [1000 + len(w) for w in words]
        answer = {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens}
        return self.json_body({**answer, "token_strs": strs})

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def handle_version(self, request: web.Request) -> web.StreamResponse:
        return self.json_body({"version": self.version})

    async def handle_metrics(self, request: web.Request) -> web.StreamResponse:
        """``/metrics`` (Prometheus text, ``v1/metrics/loggers.py``): the scheduler's gauges
        per engine and served name, every client's requests included; KV-cache use grows
        with the running requests (``kv_blocks_per_seq`` of ``kv_blocks``)."""
        labels = f'engine="0",model_name="{self.model_ids[0]}"'
        kv = min(1.0, self._seqs.running * self.kv_blocks_per_seq / self.kv_blocks)
        gauges = (
            (
                "num_requests_running",
                "Number of requests in model execution batches.",
                self._seqs.running,
            ),
            (
                "num_requests_waiting",
                "Number of requests waiting to be processed.",
                self._seqs.waiting,
            ),
            ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv),
        )
        text = "".join(
            f"# HELP vllm:{name} {help_text}\n# TYPE vllm:{name} gauge\n"
            f"vllm:{name}{{{labels}}} {float(value)}\n"
            for name, help_text, value in gauges
        )
        text += (
            "# HELP vllm:num_requests_waiting_by_reason Number of requests waiting, by reason.\n"
            "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
            f'vllm:num_requests_waiting_by_reason{{{labels},reason="capacity"}} '
            f"{float(self._seqs.waiting)}\n"
        )
        return web.Response(
            body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return self.json_body({"detail": "Not Found"}, 404)

    # -- models and errors --------------------------------------------------------------

    def models_response(self) -> JSONDict:
        created = int(time.time())
        ids = self.model_ids
        root = self.root or (ids[0] if ids else "")
        data = [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid_hex()}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for model_id in ids
        ]
        return {"object": "list", "data": data}

    def error_body(
        self, status: int, message: str, err_type: str | None = None, param: str | None = None
    ) -> web.Response:
        kind = err_type or ERROR_TYPES.get(status, "BadRequestError")
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return self.json_body(body, status)

    def error_response(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.error_body(status, message)

    def model_not_found(self, request: web.Request, model: str) -> web.Response:
        return self.error_body(
            404, f"The model `{model}` does not exist.", "NotFoundError", "model"
        )

    def resolve_model(self, request: web.Request, requested: Any, task: str) -> str | web.Response:
        if TASK_OF.get(task, "generate") not in self.tasks:
            return self.error_body(400, f"The model does not support {API_NAMES[task]} API")
        ids = self.model_ids
        if requested is None or requested == "":
            return ids[0] if ids else self.model_not_found(request, "")
        if not isinstance(requested, str) or requested not in ids:
            return self.model_not_found(request, str(requested))
        return requested

    # -- shapes -------------------------------------------------------------------------

    def chat_id(self) -> str:
        return f"chatcmpl-{uuid_hex()}"

    def completion_id(self) -> str:
        return f"cmpl-{uuid_hex()}"

    def usage_with_details(self, g: Generation) -> JSONDict:
        return {
            "prompt_tokens": g.prompt_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens,
            "completion_tokens": g.completion_tokens,
            "prompt_tokens_details": None,
        }

    @staticmethod
    def tool_call_id() -> str:
        return f"chatcmpl-tool-{uuid_hex()}"

    def chat_response(self, g: Generation, cid: str) -> JSONDict:
        calls: list[JSONDict] = []
        if g.call is not None:
            fn = {"name": g.call.name, "arguments": g.call.arguments}
            calls.append({"id": self.tool_call_id(), "type": "function", "function": fn})
        message: JSONDict = {
            "role": "assistant",
            "content": None if calls else g.text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": calls,
            "reasoning_content": "".join(g.reasoning) or None,
        }
        return {
            "id": cid,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                    "stop_reason": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": self.usage_with_details(g),
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }

    def chat_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = self.chunk_base(g, cid)
        out = [{**base, "choices": [self.chat_choice({"role": "assistant", "content": ""}, None)]}]
        for thought in g.reasoning:
            out.append(
                {**base, "choices": [self.chat_choice({"reasoning_content": thought}, None)]}
            )
        if g.call is not None:
            head = {"name": g.call.name, "arguments": ""}
            first = {"id": self.tool_call_id(), "type": "function", "index": 0, "function": head}
            out.append({**base, "choices": [self.chat_choice({"tool_calls": [first]}, None)]})
            for piece in g.call.argument_pieces(self.chunks):
                more = {"index": 0, "function": {"arguments": piece}}
                out.append({**base, "choices": [self.chat_choice({"tool_calls": [more]}, None)]})
        else:
            out += [{**base, "choices": [self.chat_choice({"content": p}, None)]} for p in g.pieces]
        final = {**self.chat_choice({"content": ""}, g.finish_reason), "stop_reason": None}
        out.append({**base, "choices": [final]})
        if g.include_usage:
            out.append({**base, "choices": [], "usage": g.usage})
        return out

    def completion_response(self, g: Generation, cid: str) -> JSONDict:
        choice = {
            "index": 0,
            "text": g.text,
            "logprobs": None,
            "finish_reason": g.finish_reason,
            "stop_reason": None,
            "prompt_logprobs": None,
        }
        return {
            "id": cid,
            "object": "text_completion",
            "created": g.created,
            "model": g.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": self.usage_with_details(g),
            "kv_transfer_params": None,
        }

    def completion_chunks(self, g: Generation, cid: str) -> list[JSONDict]:
        base = {"id": cid, "object": "text_completion", "created": g.created, "model": g.model}

        def choice(text: str, finish: str | None) -> JSONDict:
            return {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }

        out = [{**base, "choices": [choice(p, None)]} for p in g.pieces]
        out.append({**base, "choices": [choice("", g.finish_reason)]})
        if g.include_usage:
            out.append({**base, "choices": [], "usage": g.usage})
        return out

    def embeddings_response(
        self, model: str, vectors: list[list[float]] | list[str], prompt_tokens: int
    ) -> JSONDict:
        return {
            "id": f"embd-{uuid_hex()}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": [
                {"index": i, "object": "embedding", "embedding": v} for i, v in enumerate(vectors)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }

    # -- speech to text -----------------------------------------------------------------

    async def handle_transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._speech_to_text(request, translate=False)

    async def handle_translations(self, request: web.Request) -> web.StreamResponse:
        return await self._speech_to_text(request, translate=True)

    async def _speech_to_text(self, request: web.Request, *, translate: bool) -> web.StreamResponse:
        task = "translation" if translate else "transcription"
        parsed = parse_transcription(request, await request.read())
        if isinstance(parsed, str):  # FastAPI form validation
            detail = [{"type": "missing", "loc": ["body", "file"], "msg": parsed, "input": None}]
            return self.json_body({"detail": detail}, 422)
        model = self.resolve_model(request, parsed.model, task)
        if isinstance(model, web.Response):
            return model
        if parsed.response_format not in ("json", "text", "verbose_json"):
            return self.error_body(
                400, "Currently only support response_format: `text`, `json` or `verbose_json`"
            )
        if parsed.response_format == "verbose_json" and parsed.stream:
            return self.error_body(400, "verbose_json format doesn't support streaming case")
        self.on_generation(model)
        if parsed.stream:
            return await self._stream_speech(request, model, parsed.text, translate)
        answer = self._speech_answer(parsed, translate)
        return await self.run_whole(request, model, lambda: answer)

    def _speech_answer(self, parsed: TranscriptionRequest, translate: bool) -> web.Response:
        text, duration = parsed.text, parsed.duration
        if parsed.response_format == "verbose_json":
            parts = segments_for(text, duration)
            segments: list[JSONDict] = [
                {
                    "id": s.id,
                    "avg_logprob": -0.25,
                    "compression_ratio": 1.2,
                    "end": s.end,
                    "no_speech_prob": None,
                    "seek": 0,
                    "start": s.start,
                    "temperature": 0.0,
                    "text": s.text,
                    "tokens": segment_tokens(s.text),
                }
                for s in parts
            ]
            return self.json_body(
                {
                    "duration": str(duration),
                    "language": parsed.language or "en",
                    "text": "".join(s.text for s in parts),
                    "segments": segments,
                    "words": None,
                }
            )
        if translate:
            return self.json_body({"text": text})
        usage = {"type": "duration", "seconds": math.ceil(duration)}
        return self.json_body({"text": text, "usage": usage})

    async def _stream_speech(
        self, request: web.Request, model: str, text: str, translate: bool
    ) -> web.StreamResponse:
        kind = "translate" if translate else "transcribe"
        base = {
            "id": f"{kind}-{uuid_hex()}",
            "object": "translation.chunk" if translate else "transcription.chunk",
            "created": int(time.time()),
            "model": model,
        }
        pieces = split_pieces(text, self.chunks)
        frames = [self.sse_frame({**base, "choices": [{"delta": {"content": p}}]}) for p in pieces]
        last = {"delta": {"content": ""}, "finish_reason": "stop", "stop_reason": None}
        frames += [self.sse_frame({**base, "choices": [last]}), DONE_FRAME]
        return await self.run_stream(request, model, frames)
