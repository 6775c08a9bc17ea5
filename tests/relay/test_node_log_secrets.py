"""The cluster token never reaches the node's log, at any level (debug included).

websockets logs each handshake's request head at DEBUG, with its
``Authorization`` header: the node caps that logger and redacts credentials
in every record. ``--token`` on the command line is warned about (``ps``
shows it to every user).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import free_port, timeout
from tests.relay.harness import Relay, create_cluster


def test_a_debug_log_holds_no_token(tmp_path: Path) -> None:
    (tmp_path / "relay").mkdir()
    token = create_cluster(tmp_path / "relay", "home")
    relay = Relay(tmp_path / "relay").start()
    port = free_port()
    data = tmp_path / "node"
    data.mkdir()
    (data / "c.yaml").write_text("node: {name: solo}\n")
    env = {
        **os.environ,
        "QUORUM_CONFIG": str(data / "c.yaml"),
        "QUORUM_AUTODETECT__ENABLED": "false",
        "QUORUM_EMBEDDED__MODE": "off",
        "QUORUM_DISCOVERY__ENABLED": "false",
    }
    log = data / "node.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "quorum.cli", "up", "--port", str(port)),
                *("--log-level", "debug", "--data-dir", str(data)),
                *("--relay", relay.url, "--token", token),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout(30)
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/quorum/v1/status", timeout=2
                ) as resp:
                    if json.load(resp)["relay"]["connected"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout(20))
        relay.stop()
    text = log.read_text()
    assert "DEBUG" in text  # the log really is at debug level
    assert token not in text
    assert token[3:20] not in text  # not even a recognisable part of it
    assert "--token puts the cluster token on the command line" in text
