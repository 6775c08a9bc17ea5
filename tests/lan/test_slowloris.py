"""Slowloris from the LAN against a node limited to 1,024 open files (systemd's default).

Three namespaces on a bridge: the node (``prlimit --nofile=1024``), an attacker
that opens 1,100 connections and sends each half a request head, and a
neighbour. The node must refuse the attacker's connections past the
per-address cap, close the half-open ones once their head is late, and keep
answering the neighbour and its own machine throughout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import timeout
from tests.netns import Lan, require_netns, stop_process

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
PORT = 32768
HEAD_TIMEOUT_S = 3.0

ATTACK = r"""
import json, socket, sys, time
target, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks, refused = [], 0
for _ in range(count):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((target, port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        socks.append(s)
    except OSError:
        refused += 1
        s.close()
print(json.dumps({"phase": "open", "held": len(socks), "refused": refused}), flush=True)
began = time.monotonic()
closed = 0
for s in socks:
    s.settimeout(max(0.1, 30 - (time.monotonic() - began)))
    try:
        while s.recv(4096):  # the server may answer 408 first; then it must close
            pass
        closed += 1
    except ConnectionResetError:
        closed += 1
    except OSError:
        pass
print(json.dumps({"phase": "done", "closed": closed, "seconds": time.monotonic() - began}),
      flush=True)
"""

HEALTH = r"""
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    print(r.status)
"""


def _health(lan: Lan, host_index: int, url: str) -> str:
    done = lan.run(lan.hosts[host_index], [sys.executable, "-c", HEALTH, url], timeout=timeout(20))
    return done.stdout.strip() or done.stderr.strip()[-300:]


def test_half_open_connections_from_the_lan_cannot_take_the_node_down(tmp_path: Path) -> None:
    require_netns()
    assert shutil.which("prlimit"), "prlimit (util-linux) is needed"
    config = tmp_path / "node.yaml"
    config.write_text(
        # Plain HTTP from the LAN (off by default: TLS only) so the heads are HTTP's.
        f"node: {{name: victim, head_timeout_s: {HEAD_TIMEOUT_S}, allow_plain_lan: true, "
        f"data_dir: {json.dumps(str(tmp_path))}}}\n"
        "autodetect: {enabled: false}\nembedded: {mode: 'off'}\n"
        "discovery: {enabled: false}\n"
    )
    with Lan(3) as lan:
        victim, attacker, _ = lan.hosts
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        with (tmp_path / "node.log").open("w") as log:
            node = lan.popen(
                victim,
                [
                    *("prlimit", "--nofile=1024:1024", "--"),
                    *(sys.executable, "-m", "quorum.cli", "up", "--config", str(config)),
                    *("--bind", "0.0.0.0", "--port", str(PORT)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        own = f"http://127.0.0.1:{PORT}/healthz"
        neighbour = f"http://{victim.address}:{PORT}/healthz"
        deadline = time.monotonic() + timeout(60)
        while _health(lan, 0, own) != "200":
            assert node.poll() is None, (tmp_path / "node.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()
            time.sleep(0.2)

        attack = lan.popen(
            attacker, [sys.executable, "-c", ATTACK, victim.address, str(PORT), "1100"]
        )
        assert attack.stdout is not None
        opened = json.loads(attack.stdout.readline())
        # Past the per-address cap (64) the node closes the attacker's connections at once.
        assert opened["held"] + opened["refused"] == 1100
        # Meanwhile the node answers its own machine and its other neighbours.
        assert _health(lan, 0, own) == "200"
        assert _health(lan, 2, neighbour) == "200"
        done = json.loads(attack.stdout.readline())
        assert done["closed"] == opened["held"], done  # every half-open one was closed
        assert done["seconds"] < HEAD_TIMEOUT_S + timeout(10)
        assert stop_process(attack) is not None
        assert node.poll() is None, "the node died"
        assert _health(lan, 2, neighbour) == "200"
        stop_process(node)
    text = (tmp_path / "node.log").read_text()
    assert "Too many open files" not in text
    assert "Traceback" not in text
