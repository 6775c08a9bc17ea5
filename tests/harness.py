"""Test helpers: timeouts scaled by one env var, a loop in a thread, nodes on port 0.

Sync SDK clients block their thread, so the servers under test (fake engines,
nodes) run on an event loop in a background thread; tests talk to them over
loopback with the real ``openai`` client, sync or async.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from quorum.app import Node
from quorum.config.load import deep_merge, validate

T = TypeVar("T")

# Every timeout in the suite is a multiple of this; slow machines set the factor.
TIMEOUT_FACTOR = float(os.environ.get("QUORUM_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], seconds: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout(seconds))

    def call(self, fn: Callable[[], T], seconds: float = 10) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), seconds)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout(10))
        self.loop.close()


def node_config(tmp: Path, **over: Any) -> Any:
    """A config for a test node: port 0, no autodetection, no embedded engine."""
    base: dict[str, Any] = {
        "node": {"name": "node-a", "port": 0, "data_dir": str(tmp)},
        "autodetect": {"enabled": False},
        "embedded": {"mode": "off"},
        "discovery": {"enabled": False},
    }
    return validate(deep_merge(base, over))


async def start_node(config: Any) -> Node:
    node = Node(config)
    await node.start()
    return node


async def wait_for(
    check: Callable[[], Awaitable[bool]], seconds: float, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail after ``seconds`` (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(seconds)
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout(seconds):.1f} s")
        await asyncio.sleep(interval)
