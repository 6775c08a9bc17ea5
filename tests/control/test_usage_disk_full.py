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

from tests.control.test_node_usage import node_behind_relay, stored_usage
from tests.fakes import LoopThread
from tests.harness import timeout

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
    with node_behind_relay(bg, tmp_path, small_disk / "node") as node:
        filler = fill(small_disk)
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
    records = stored_usage(tmp_path)
    assert len(records) == 5 == len({r.request_id for r in records})
    assert {r.status for r in records} == {200}
