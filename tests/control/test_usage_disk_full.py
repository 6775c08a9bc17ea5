"""A full disk never fails a request: usage records wait in memory and still arrive once.

The node's data directory is a small tmpfs the test mounts (root only, as the
netns tests) and fills to the last byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from relay.sqlite_store import SqliteStore
from tests.fakes import FakeVLLM, LoopThread
from tests.harness import node_config, start_node, timeout
from tests.relay.harness import Relay, create_cluster

MODEL = "Qwen/Qwen3-0.6B"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    assert os.geteuid() == 0, "mounting a tmpfs needs root (CI runs as root)"
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the file to delete to free them."""
    filler = disk / "filler"
    # Unbuffered: a failed write raises here, not again when the file is closed.
    with filler.open("wb", buffering=0) as out:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler


def status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/quorum/v1/status", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def test_a_full_disk_never_fails_a_request(
    bg: LoopThread, tmp_path: Path, small_disk: Path
) -> None:
    (tmp_path / "relay").mkdir()
    token = create_cluster(tmp_path / "relay", "home")
    relay = Relay(tmp_path / "relay").start()
    engine = FakeVLLM(chunks=3)
    url = bg.run(engine.start())
    config = node_config(
        small_disk / "node",
        cluster={"token": token},
        relay={"url": relay.url},
        discovery={"enabled": False},
        services=[{"name": "vllm", "url": url}],
    )
    node = bg.run(start_node(config))
    filler = fill(small_disk)
    try:
        with openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0) as client:
            for i in range(3):
                done = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"full {i}"}]
                )
                assert done.choices[0].message.content == f"You said: full {i}"
            with client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "stream"}], stream=True
            ) as stream:
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            problem = status(node.url)["usage"]["problem"]
            assert problem and "cannot be written" in problem
            assert node.ctx.outbox is not None and node.ctx.outbox.problem is not None
            filler.unlink()  # the disk has room again
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "room again"}]
            )
        outbox = node.ctx.outbox
        deadline = time.monotonic() + timeout(20)
        while outbox.pending() or outbox.problem:
            assert time.monotonic() < deadline, (outbox.pending(), outbox.problem)
            time.sleep(0.05)
        assert status(node.url)["usage"] == {"held": 0, "dropped": 0, "problem": None}
    finally:
        bg.run(node.stop())
        bg.run(engine.stop())
        relay.stop()
    store = SqliteStore(tmp_path / "relay")
    try:
        (cluster,) = store.clusters()
        records = store.usage_records(cluster.id, limit=100)
    finally:
        store.close()
    assert len(records) == 5 == len({r.request_id for r in records})
    assert {r.status for r in records} == {200}
