"""The relay as a systemd service: the unit verifies, and the process speaks sd_notify."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.harness import free_port, timeout
from tests.relay.harness import create_cluster

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


def test_tls_with_cert_and_key(tmp_path: Path) -> None:
    """`--tls-cert/--tls-key`: nodes reach the relay over wss:// with the token checked."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=timeout(60),
    )  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    token = create_cluster(data, "tls")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data", str(data), "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))

    async def attempt(bearer: str) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(20)
        while True:
            try:
                async with connect(
                    f"wss://127.0.0.1:{port}/tunnel",
                    ssl=context,
                    additional_headers={"Authorization": f"Bearer {bearer}"},
                ):
                    return "open"
            except InvalidStatus as exc:
                return str(exc.response.status_code)
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    try:
        assert asyncio.run(attempt(token)) == "open"
        assert asyncio.run(attempt("qc_not-the-token-at-all")) == "401"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout(20))
