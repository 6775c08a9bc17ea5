"""Fake local inference engines for Quorum's tests.

Each fake is an aiohttp server that answers what the real engine answers (the module
docstrings name the source of every shape), records every request, and can be switched
into failure modes at runtime::

    async with FakeOllama(models=["llama3.2:1b"]) as ollama:
        base = ollama.url               # http://127.0.0.1:<port>
        ollama.add_model("qwen3:0.6b")  # a pull, as the node's refresh will see it
        ollama.mode = "die_midstream"   # the next streamed answer is cut off

See ``FakeEngine`` for the shared knobs (``mode``, ``chunks``, ``chunk_delay``,
``gen_delay``, ...). Under concurrency each fake behaves like its engine: llama.cpp's
slots, Ollama's parallel requests and bounded queue, vLLM's max_num_seqs, LM Studio and
mlx_lm one generation at a time, llama-cpp-python one request at a time that interrupts
a running stream (see each module's docstring)::

    async with FakeLlamaCpp(total_slots=2, gen_delay=30) as llama:
        ...                              # two generations run, the rest are deferred
        await llama.until(lambda: llama.waiting == 1)
        llama.gen_delay = 0              # the running generations finish now
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
from ._slots import SlotPool
from .llamacpp import FakeLlamaCpp
from .llamacpp_python import FakeLlamaCppPython, LlamaCppPythonEngine
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
        FakeLlamaCppPython,
        FakeLMStudio,
        FakeMLX,
        FakeTTS,
        FakeImages,
        FakeWhisper,
    )
}
"""Fake class by engine kind: ollama, vllm, llamacpp, llamacpp_python, lmstudio, mlx, tts,
image, stt."""

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
    "FakeLlamaCppPython",
    "FakeMLX",
    "FakeOllama",
    "FakeTTS",
    "FakeVLLM",
    "FakeWhisper",
    "FormPart",
    "Generation",
    "LlamaCppPythonEngine",
    "LoopThread",
    "Mode",
    "ModelSpec",
    "OpenAICompatEngine",
    "RecordedRequest",
    "SlotPool",
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
