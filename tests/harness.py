"""Test helpers: timeouts scaled by one env var, a loop in a thread, nodes on port 0, free
ports for processes that bind one later.

Sync SDK clients block their thread, so the servers under test (fake engines,
nodes) run on an event loop in a background thread (``tests.fakes.LoopThread``);
tests talk to them over loopback with the real ``openai`` client, sync or async.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from quorum.app import Node
from quorum.config.load import deep_merge, validate

# Every timeout in the suite is a multiple of this; slow machines set the factor.
TIMEOUT_FACTOR = float(os.environ.get("QUORUM_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port of 127.0.0.1 that is free now, for a process that binds it a moment later.

    Chosen below the kernel's ephemeral range: a port picked by binding port 0 comes from
    that range, where any outgoing connection of the suite (it makes thousands) may take it
    as its local port before the process binds it ("address already in use")."""
    high = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, high - 12_000), high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: the kernel's pick, as before
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
