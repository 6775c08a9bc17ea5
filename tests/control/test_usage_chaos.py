"""Usage exactly once through a node while the relay dies twice and the node once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relay.sqlite_store import SqliteStore
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import free_port, timeout
from tests.relay.harness import Relay, create_cluster

TOTAL = 500
MODEL = "Qwen/Qwen3-0.6B"


class NodeProcess:
    """``quorum up`` as a child process that can be SIGKILLed and started again."""

    def __init__(self, tmp: Path, engine_url: str, relay_url: str, token: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.config = tmp / "node.yaml"
        self.config.write_text(
            json.dumps(
                {
                    "node": {"name": "chaos", "port": self.port, "data_dir": str(tmp / "data")},
                    "cluster": {"token": token},
                    "relay": {"url": relay_url},
                    "discovery": {"enabled": False},
                    "autodetect": {"enabled": False},
                    "embedded": {"mode": "off"},
                    "services": [{"name": "vllm", "url": engine_url}],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.tmp / "node.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quorum.cli", "up", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "QUORUM_LOG_LEVEL": "warning"},
            )
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / "node.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the node did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout(10))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout(30))


@pytest.mark.slow
def test_500_requests_exactly_once_through_relay_and_node_deaths(
    bg: LoopThread, tmp_path: Path
) -> None:
    (tmp_path / "relay").mkdir()
    token = create_cluster(tmp_path / "relay", "home")
    relay = Relay(tmp_path / "relay").start()
    engine = FakeVLLM(chunks=2)
    node = NodeProcess(tmp_path, bg.run(engine.start()), relay.url, token)
    node.start()
    answered: list[int] = []  # completion tokens of every answered request
    lock = threading.Lock()
    attempts = iter(range(10 * TOTAL))

    def one(i: int) -> None:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": f"x {i}"}]})
        req = urllib.request.Request(
            f"http://127.0.0.1:{node.port}/v1/chat/completions", data=body.encode()
        )
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
                usage = json.load(resp)["usage"]
        except (urllib.error.URLError, OSError, ValueError):
            return  # not answered (the node was down): no record is owed
        with lock:
            answered.append(int(usage["completion_tokens"]))

    def load() -> None:
        with ThreadPoolExecutor(4) as pool:
            while True:
                with lock:
                    if len(answered) >= TOTAL:
                        return
                batch = [next(attempts) for _ in range(4)]
                list(pool.map(one, batch))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()

    def after(n: int) -> None:
        deadline = time.monotonic() + timeout(60)
        while True:
            with lock:
                if len(answered) >= n:
                    return
            assert time.monotonic() < deadline, f"stuck at {len(answered)} answers"
            time.sleep(0.01)

    try:
        after(100)
        relay.kill()  # 1st relay death: the node keeps serving, records wait in its outbox
        after(150)
        relay = Relay(relay.data, relay.port).start()
        after(250)
        relay.kill()  # 2nd
        after(300)
        relay = Relay(relay.data, relay.port).start()
        after(350)
        node.kill()  # the node crashes with records possibly unshipped
        node.start()  # same data dir: the outbox is still there
        worker.join(timeout(120))
        assert not worker.is_alive()
        deadline = time.monotonic() + timeout(60)
        while True:
            store = SqliteStore(relay.data)
            try:
                (cluster,) = store.clusters()
                records = store.usage_records(cluster.id, limit=10 * TOTAL)
            finally:
                store.close()
            if len(records) >= len(answered) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        node.stop()
        relay.kill()
        bg.run(engine.stop())
    ok = [r for r in records if r.status == 200]
    assert len(answered) >= TOTAL
    assert len(ok) == len(answered)  # every answered request: exactly one record
    assert len({r.request_id for r in records}) == len(records)
    assert sum(r.completion_tokens or 0 for r in ok) == sum(answered)
