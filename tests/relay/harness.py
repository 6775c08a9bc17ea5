"""A real relay process on loopback, and nodes that reach each other only through it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from quorum.protocol import MAX_FRAME_SIZE, Connection, Role
from tests.harness import free_port, timeout


def relay_cli(data: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=True,
    )
    return done.stdout


def create_cluster(data: Path, name: str) -> str:
    """The join token printed by ``quorum-relay cluster create``."""
    out = relay_cli(data, "cluster", "create", name)
    for line in out.splitlines():
        if line.startswith("token"):
            return line.split()[1]
    raise AssertionError(f"no token in {out!r}")


class Relay:
    """``quorum-relay serve`` as a child process on a fixed loopback port."""

    def __init__(self, data: Path, port: int | None = None, *extra: str) -> None:
        self.data = data
        self.extra = extra  # more `serve` flags
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data / "relay.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/tunnel"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "relay.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data),
                    "--drain-timeout",
                    "5",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout(20)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("the relay did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout(10))

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout(20))


class RawNode:
    """A bare protocol client on a real WebSocket: for tests that must misbehave."""

    def __init__(self, url: str, token: str, node_id: str) -> None:
        self.url, self.token, self.node_id = url, token, node_id

    async def __aenter__(self) -> RawNode:

        self.ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=MAX_FRAME_SIZE,
            ping_interval=None,
            compression=None,
        )
        self.conn = Connection(Role.NODE)
        self.conn.send_hello(self.node_id)
        await self.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def flush(self) -> None:
        for frame in self.conn.data_to_send():
            await self.ws.send(frame)

    async def events(self, seconds: float) -> list[object]:
        """Frames received within ``seconds`` (scaled), decoded into protocol events."""
        out: list[object] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(seconds)
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    data = await self.ws.recv()
            except (TimeoutError, ConnectionClosed):
                break
            assert isinstance(data, bytes)
            out += self.conn.receive_frame(data, loop.time())
            await self.flush()
        return out
