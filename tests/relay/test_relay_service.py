"""The relay as a systemd service: the unit verifies, and the process speaks sd_notify."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import timeout
from tests.relay.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "quorum-relay.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_verifies(tmp_path: Path) -> None:
    relay_bin = Path(sys.executable).parent / "quorum-relay"
    exe = str(relay_bin) if relay_bin.exists() else "/bin/true"
    unit = tmp_path / "quorum-relay.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/quorum-relay", exe))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=quorum-relay",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "LimitNOFILE=",
        "WatchdogSec=",
    ):
        assert setting in text


def test_ready_watchdog_and_stopping_are_notified(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(timeout(20))
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relay.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--data",
                str(tmp_path / "data"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen: list[str] = []
            while "READY=1" not in seen or seen.count("WATCHDOG=1") < 2:
                seen.append(sock.recv(256).decode())
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in seen:
                seen.append(sock.recv(256).decode())
            assert proc.wait(timeout(20)) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
