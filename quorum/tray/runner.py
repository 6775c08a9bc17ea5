"""The node on a worker thread, for a GUI that must own the main thread.

pystray's loop must run on the main thread (macOS requires it), so the tray
runs the :class:`~quorum.app.Node` in an asyncio loop on a thread of its own.
:class:`NodeThread` owns that thread and loop:

- :meth:`NodeThread.start` starts the thread and returns once its loop runs;
- the node's status JSON is handed to ``on_report`` (on the worker thread) as a
  :class:`NodeReport` once the node is up, every ``interval_s`` after that, and
  at once after a change asked through this object;
- :meth:`NodeThread.set_paused` pauses or resumes sharing (thread-safe);
- :meth:`NodeThread.stop` stops the node (goodbyes sent, tasks cancelled, port
  closed) and joins the thread.

A node that fails to start is reported with its error and stays stopped; the
thread then only waits for :meth:`stop`, so the tray can show what went wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quorum.app import Node
from quorum.config.models import Config
from quorum.errors import QuorumError
from quorum.server.status import status_json

log = logging.getLogger("quorum.tray")

REPORT_INTERVAL_S = 2.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What the tray learns from the node: its status JSON, or why there is none."""

    status: dict[str, Any] | None
    error: str | None
    paused: bool


class NodeThread:
    """A :class:`Node` run by an event loop on a worker thread (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        on_report: Callable[[NodeReport], None],
        *,
        interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        self._config = config
        self._on_report = on_report
        self._interval_s = interval_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None  # set once: stop the node
        self._wake: asyncio.Event | None = None  # set on stop and on changes: report now
        self._node: Node | None = None
        self._paused = False

    @property
    def node(self) -> Node | None:
        """The node once created (read its attributes only from the worker thread)."""
        return self._node

    def start(self) -> None:
        """Start the worker thread; returns once its loop runs (the node may still start)."""
        if self._thread is not None:
            raise QuorumError("the node thread was already started")
        self._thread = threading.Thread(target=self._run, name="quorum-node", daemon=True)
        self._thread.start()
        self._ready.wait()

    def set_paused(self, paused: bool) -> concurrent.futures.Future[None]:
        """Pause or resume sharing; the future completes once the node has done it."""
        return self._submit(self._set_paused(paused))

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the node and join the thread. Idempotent; safe from any thread but the worker."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._request_stop)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("the node did not stop within %.0f s", timeout_s)

    # -- worker thread ------------------------------------------------------

    def _submit(self, coro: Any) -> concurrent.futures.Future[None]:
        if self._loop is None:
            coro.close()
            raise QuorumError("the node thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._main())
        except Exception:
            log.exception("the node thread failed")
        finally:
            self._ready.set()  # never leave start() waiting

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        self._ready.set()
        node = self._node = Node(self._config)
        try:
            await node.start()
        except QuorumError as exc:
            log.error("the node could not start: %s", exc)
            self._report(None, str(exc))
            await self._stop.wait()
            return
        except Exception as exc:
            log.exception("the node could not start")
            self._report(None, f"{type(exc).__name__}: {exc}")
            await self._stop.wait()
            return
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self._report(status_json(node.ctx), None)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._wake.wait()
        finally:
            log.info("stopping the node")
            await node.stop()

    async def _set_paused(self, paused: bool) -> None:
        node = self._node
        if node is None:
            raise QuorumError("the node is not running")
        if paused:
            await node.pause_sharing()
        else:
            await node.resume_sharing()
        self._paused = paused
        if self._wake is not None:
            self._wake.set()

    def _request_stop(self) -> None:
        if self._stop is not None and self._wake is not None:
            self._stop.set()
            self._wake.set()

    def _report(self, status: dict[str, Any] | None, error: str | None) -> None:
        try:
            self._on_report(NodeReport(status, error, self._paused))
        except Exception:
            log.exception("the tray failed to show the node's status")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (as ``quorum up`` uses), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
