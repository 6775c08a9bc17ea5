"""A real relay process on loopback, and nodes that reach each other only through it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import timeout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
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
