"""Fake local inference engines for Quorum's tests.

Each fake is an aiohttp server that answers what the real engine answers (the module
docstrings name the source of every shape), records every request, and can be switched
into failure modes at runtime::

    async with FakeOllama(models=["llama3.2:1b"]) as ollama:
        base = ollama.url               # http://127.0.0.1:<port>
        ollama.add_model("qwen3:0.6b")  # a pull, as the node's refresh will see it
        ollama.mode = "die_midstream"   # the next streamed answer is cut off

See ``FakeEngine`` for the shared knobs (``mode``, ``chunks``, ``chunk_delay``, ...).
"""

from ._core import (
    BAD_JSON,
    GARBAGE,
    MODES,
    FakeEngine,
    Mode,
    ModelSpec,
    RecordedRequest,
    echo_reply,
)
from ._media import (
    SPEECH_CONTENT_TYPES,
    AudioInfo,
    FormPart,
    inspect_audio,
    make_png,
    make_wav,
    parse_multipart,
    png_text,
    speech_bytes,
    transcript_for,
)
from ._openai import (
    Generation,
    OpenAICompatEngine,
    content_text,
    count_words,
    fake_embedding,
    split_pieces,
)
from .llamacpp import FakeLlamaCpp
from .lmstudio import FakeLMStudio
from .mlx import FakeMLX
from .net import LoopThread, closed_port, closed_port_url
from .ollama import FakeOllama
from .services import FakeImages, FakeTTS, FakeWhisper
from .vllm import FakeVLLM

ENGINES: dict[str, type[FakeEngine]] = {
    cls.kind: cls
    for cls in (
        FakeOllama,
        FakeVLLM,
        FakeLlamaCpp,
        FakeLMStudio,
        FakeMLX,
        FakeTTS,
        FakeImages,
        FakeWhisper,
    )
}
"""Fake class by engine kind: ollama, vllm, llamacpp, lmstudio, mlx, tts, image, stt."""

__all__ = [
    "BAD_JSON",
    "ENGINES",
    "GARBAGE",
    "MODES",
    "SPEECH_CONTENT_TYPES",
    "AudioInfo",
    "FakeEngine",
    "FakeImages",
    "FakeLMStudio",
    "FakeLlamaCpp",
    "FakeMLX",
    "FakeOllama",
    "FakeTTS",
    "FakeVLLM",
    "FakeWhisper",
    "FormPart",
    "Generation",
    "LoopThread",
    "Mode",
    "ModelSpec",
    "OpenAICompatEngine",
    "RecordedRequest",
    "closed_port",
    "closed_port_url",
    "content_text",
    "count_words",
    "echo_reply",
    "fake_embedding",
    "inspect_audio",
    "make_png",
    "make_wav",
    "parse_multipart",
    "png_text",
    "speech_bytes",
    "split_pieces",
    "transcript_for",
]
