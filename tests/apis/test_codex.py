"""``codex exec`` (npm ``@openai/codex``, installed by ``scripts/test`` under ``.cache/npm``)
pointed at a node with ``wire_api = "responses"``: one prompt, answered by a fake engine that
serves only chat completions, so the node translates Codex's Responses request and stream.

Codex must reach nothing but the node: its analytics, feedback, update check and plugin
sync are off in its config, and every proxy variable points at a local trap that records
any connection, so an attempt to go out fails at once (and the test says so) instead of
leaving the machine or hanging.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import MakeRig
from tests.fakes import FakeVLLM
from tests.harness import timeout

REPO = Path(__file__).resolve().parents[2]
CODEX = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "codex"
MODEL = "Qwen/Qwen3-0.6B"
REPLY = "Quorum answered Codex."


class Trap:
    """A listener that records the first bytes of every connection and closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.seen: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, name="codex-proxy-trap")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(timeout(2))
                try:
                    self.seen.append(conn.recv(512))
                except OSError:
                    self.seen.append(b"")

    def __enter__(self) -> Trap:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout(5))


def codex_config(base_url: str) -> str:
    return f"""
model = "{MODEL}"
model_provider = "quorum"
check_for_update_on_startup = false

[model_providers.quorum]
name = "Quorum"
base_url = "{base_url}"
env_key = "QUORUM_CODEX_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = {int(timeout(30) * 1000)}

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
apps = false
"""


def test_codex_exec_completes_a_prompt_through_the_node(make_rig: MakeRig, tmp_path: Path) -> None:
    if not CODEX.exists():
        pytest.skip(f"{CODEX} is missing: scripts/test installs @openai/codex there")
    fake = FakeVLLM(models=[MODEL], reply=lambda prompt: REPLY, call_tools=False)
    rig = make_rig({"vllm": (fake, {})})
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(codex_config(rig.base_url))
    last = tmp_path / "last-message.txt"
    with Trap() as trap:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CODEX_HOME": str(home),
            "QUORUM_CODEX_KEY": "dummy-key",
            "NO_COLOR": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **{name: trap.url for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")},
            **{name.lower(): trap.url for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")},
        }
        done = subprocess.run(
            [
                str(CODEX),
                "exec",
                "--skip-git-repo-check",
                "--ephemeral",
                "--sandbox",
                "read-only",
                "--cd",
                str(work),
                "--output-last-message",
                str(last),
                "Answer with one short sentence.",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout(120),
            check=False,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    assert last.read_text().strip() == REPLY
    assert REPLY in done.stdout
    assert trap.seen == [], "codex tried to reach past the node"
    chats = fake.requests_to("/v1/chat/completions", "POST")
    assert chats, "the node never asked the engine"
    body = chats[-1].json()
    assert body["model"] == MODEL and body["stream"] is True
    assert any("one short sentence" in str(m.get("content")) for m in body["messages"])
