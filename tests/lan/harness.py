"""Processes for the LAN cluster tests: real nodes, fake engines and SDK clients in namespaces.

Every process runs in a :class:`~tests.netns.Lan` host through
:meth:`Lan.popen`, so closing the Lan stops it whatever happened. Its stdout
is read line by line by a thread (and copied to a log file); waits are on
those lines, with deadlines, never bare sleeps:

- :class:`QuorumNode`: ``python3 -m quorum.cli up --config FILE``, logs on
  stdout; ready when it logs ``node NAME ready on``;
- :class:`FakeEngineProcess`: ``python3 -m tests.lan.serve_fake``, JSON lines;
- :class:`SdkClient`: ``python3 -m tests.lan.client``, one JSON command per
  line in, one JSON result per line out.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.discovery.harness import DEADLINE_S
from tests.netns import TIMEOUT_FACTOR, Host, Lan, stop_process

REPO = Path(__file__).resolve().parents[2]
NODE_PORT = 32768
REQUEST_TIMEOUT_S = 10.0 * TIMEOUT_FACTOR
POLL_INTERVAL_S = 0.2

T = TypeVar("T")
Json = dict[str, Any]


def child_env() -> dict[str, str]:
    """The test's environment without ``QUORUM_*`` overrides (but with the timeout factor)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env["QUORUM_TEST_TIMEOUT_FACTOR"] = str(TIMEOUT_FACTOR)
    env["PYTHONPATH"] = str(REPO)
    return env


def poll(what: str, check: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Call ``check`` until it returns something other than None or False; fail after ``timeout``.

    The last value seen is part of the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(POLL_INTERVAL_S)


class LineProcess:
    """A process in a Lan host; its stdout lines accumulate in :attr:`lines`."""

    def __init__(
        self,
        lan: Lan,
        host: Host,
        argv: Sequence[str],
        log_path: Path,
        *,
        stdin: bool = False,
        merge_stderr: bool = False,
    ) -> None:
        self.host = host
        self.log_path = log_path
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._log = log_path.open("w")
        self.process = lan.popen(
            host,
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if merge_stderr else self._log,
            env=child_env(),
            cwd=str(REPO),
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{log_path.stem}")
        self._reader.daemon = True
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                if not self._log.closed:
                    self._log.write(line)
                    self._log.flush()
                self._changed.notify_all()

    def wait_line(
        self, what: str, predicate: Callable[[str], bool], *, after: int = 0, timeout: float
    ) -> int:
        """Index of the first line at or after ``after`` matching ``predicate``.

        Fails, with the output's tail, after ``timeout`` or as soon as the
        process's output ends.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if predicate(self.lines[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"{self.log_path.stem}: no {what} within {timeout:.0f} s "
                        f"(exit code {self.process.poll()});\n{self.tail()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after a while); the exit code, None if it would not die."""
        code = stop_process(self.process)
        self._finish()
        return code

    def kill(self) -> int | None:
        """SIGKILL, as a crash or a pulled plug would end it."""
        if self.process.poll() is None:
            self.process.kill()
        code = stop_process(self.process)
        self._finish()
        return code

    def _finish(self) -> None:
        self._reader.join(DEADLINE_S)
        with self._changed:
            self._log.close()

    def tail(self, lines: int = 40) -> str:
        with self._changed:
            if not self._log.closed:
                self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class QuorumNode(LineProcess):
    """``quorum up`` with a config file written here; see :meth:`write_config`."""

    def __init__(self, lan: Lan, host: Host, config: Path, log_path: Path) -> None:
        self.config = config
        self.name = str(yaml.safe_load(config.read_text())["node"]["name"])
        argv = [sys.executable, "-W", "error", "-m", "quorum.cli", "up", "--config", str(config)]
        super().__init__(lan, host, argv, log_path, merge_stderr=True)

    @staticmethod
    def write_config(
        path: Path,
        *,
        name: str,
        token: str,
        data_dir: Path,
        services: Sequence[Json] = (),
    ) -> Path:
        config: Json = {
            "node": {"name": name, "port": NODE_PORT, "data_dir": str(data_dir)},
            "cluster": {"token": token},
            "autodetect": {"enabled": False},
            "embedded": {"mode": "off"},
            "services": list(services),
            "log_level": "debug",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def wait_ready(self, timeout: float = DEADLINE_S) -> None:
        self.wait_line(
            "ready line", lambda line: f"node {self.name} ready on" in line, timeout=timeout
        )

    def node_id(self) -> str:
        data_dir = Path(yaml.safe_load(self.config.read_text())["node"]["data_dir"])
        return (data_dir / "node_id").read_text().strip()

    def problems(self) -> list[str]:
        """Lines of its log that show something went wrong (tracebacks, errors)."""
        with self._changed:
            return [
                line
                for line in self.lines
                if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
            ]


class FakeEngineProcess(LineProcess):
    """``python3 -m tests.lan.serve_fake``: a fake engine on the host's own loopback."""

    def __init__(
        self,
        lan: Lan,
        host: Host,
        log_path: Path,
        *,
        kind: str,
        port: int,
        models: Sequence[str],
        chunks: int = 4,
        chunk_delay: float = 0.0,
    ) -> None:
        argv = [sys.executable, "-W", "error", "-m", "tests.lan.serve_fake", "--kind", kind]
        argv += ["--port", str(port), "--models", ",".join(models)]
        argv += ["--chunks", str(chunks), "--chunk-delay", str(chunk_delay)]
        super().__init__(lan, host, argv, log_path)
        self.url = f"http://127.0.0.1:{port}"

    def events(self) -> list[Json]:
        with self._changed:
            return [json.loads(line) for line in self.lines if line.startswith("{")]

    def wait_ready(self, timeout: float = DEADLINE_S) -> None:
        self.wait_line("ready event", lambda line: '"event": "ready"' in line, timeout=timeout)

    def cancelled(self) -> int:
        """How many answers a client cut short, as the engine noticed."""
        counts = [e["count"] for e in self.events() if e["event"] == "cancelled"]
        return max(counts, default=0)

    def requests(self, path: str | None = None) -> list[Json]:
        return [e for e in self.events() if e["event"] == "request" and path in (None, e["path"])]


class SdkClient(LineProcess):
    """``python3 -m tests.lan.client``: the ``openai`` SDK inside a namespace, driven by stdin."""

    def __init__(self, lan: Lan, host: Host, log_path: Path, tls: Json | None = None) -> None:
        argv = [sys.executable, "-W", "error", "-m", "tests.lan.client"]
        super().__init__(lan, host, argv, log_path, stdin=True)
        self.tls = tls  # what every command carries unless it says otherwise (client.py)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(self, op: str, *, timeout: float = REQUEST_TIMEOUT_S, **fields: Any) -> Json:
        """Run one command (see ``tests.lan.client``) and return its result."""
        with self._lock:
            command_id = next(self._ids)
            assert self.process.stdin is not None
            command = {"op": op, "id": command_id, "timeout": timeout, "tls": self.tls, **fields}
            line = json.dumps(command)
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            # The first command also waits for the SDK to import.
            index = self.wait_line(
                f"answer to {line}",
                lambda text: _answer_id(text) == command_id,
                timeout=timeout + DEADLINE_S,
            )
            result: Json = json.loads(self.lines[index])
            return result

    def models(self, base_url: str, api_key: str = "unused") -> dict[str, Json]:
        """``/v1/models`` as the SDK lists it, by model id; fails on anything but 200."""
        result = self.call("models", base_url=base_url, api_key=api_key)
        assert result["status"] == 200, result
        return {m["id"]: m for m in result["models"]}

    def stop(self) -> int | None:
        if self.process.poll() is None and self.process.stdin is not None:
            try:
                self.process.stdin.close()  # end of input: the client exits
                self.process.wait(DEADLINE_S)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        return super().stop()


def _answer_id(line: str) -> object:
    try:
        return json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None


def base_url(host: Host | None = None) -> str:
    """A node's ``/v1`` URL: plain HTTP over loopback inside its own namespace, else TLS at
    ``host``'s address (a node answers other machines over TLS only)."""
    return node_url(host, "/v1")


def node_url(host: Host | None, path: str, scheme: str = "https") -> str:
    if host is None:
        return f"http://127.0.0.1:{NODE_PORT}{path}"
    return f"{scheme}://{host.address}:{NODE_PORT}{path}"
