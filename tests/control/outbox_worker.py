"""A process that owns a usage outbox: appends N records, ships them, exits when all are acked.

``python -m tests.control.outbox_worker OUTBOX RELAY_HTTP COUNT``, with the
cluster token in ``$QUORUM_TEST_TOKEN`` (kept out of the process list).
Record ``i`` has request id ``req-<i>``, ``i % 7`` prompt and ``i % 5``
completion tokens, so a test can check totals. The records are appended once
(a marker file says so), as a node appends each answered request once; a
worker killed while appending appends again, which the outbox ignores for
ids it holds.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp

from quorum.usage import UsageRecord
from quorum.usage.outbox import HttpShipper, Outbox


def make(i: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{i}",
        time_ms=1_700_000_000_000 + i,
        model="m",
        endpoint="chat",
        route="local",
        node="worker",
        status=200,
        duration_ms=1.0,
        prompt_tokens=i % 7,
        completion_tokens=i % 5,
    )


async def main(path: Path, relay: str, count: int) -> None:
    token = os.environ["QUORUM_TEST_TOKEN"]
    async with aiohttp.ClientSession() as session:
        outbox = Outbox(
            path, HttpShipper(relay, token, session), batch_size=25, linger_s=0, max_backoff_s=0.5
        )
        if not path.with_suffix(".appended").exists():
            for start in range(0, count, 100):
                await outbox.extend([make(i) for i in range(start, min(count, start + 100))])
            path.with_suffix(".appended").touch()
        print("appended", flush=True)
        task = asyncio.create_task(outbox.run(), name="outbox")
        await outbox.wait_empty()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()
        print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
