"""``python3 -m bench profile``: where the node spends its time under load (needs py-spy).

Starts the fake engine and a node as ``bench node`` does, loads the node
(chat at concurrency 16 by default), samples the node with ``py-spy record``
meanwhile, and prints the share of the node's busy samples by cost centre
(socket writes, aiohttp client, aiohttp server, logging, metrics, gc...) and
by function. The raw collapsed stacks are kept in ``--out`` for a flame graph.
py-spy slows the node while it samples: read shares, not absolute rates.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench import node
from bench.procs import BENCH_ROOT, BenchError, Children

# Cost centres, matched against a sample's frames from the leaf up; the first frame that
# matches any pattern names the sample's centre. Order matters: specific before general.
CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("socket write() syscalls", ("_writelines (", "write (libc", "UVStream")),
    ("gc", ("gc_collect",)),
    ("logging", ("logging/__init__",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("uuid", ("uuid.py",)),
    ("json", ("json/",)),
    ("asyncio.timeout", ("asyncio/timeouts",)),
    ("ipaddress", ("ipaddress.py",)),
    ("quorum/server/proxy.py", ("quorum/server/proxy.py",)),
    ("quorum/server/middleware.py", ("quorum/server/middleware.py",)),
    ("quorum (other)", ("quorum/",)),
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector", "aiohttp/payload")),
    ("aiohttp server", ("aiohttp/web_", "aiohttp/http_", "aiohttp/streams", "aiohttp/base_")),
    ("event loop", ("Runner.run (", "epoll", "read (libc", "uvloop", "asyncio/", "_asyncio")),
)
_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"/[^ ;()]*/(site-packages|lib/python3\.\d+)/")


def frame_name(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    return _SITE.sub("", _LINE.sub(")", frame)).replace(str(BENCH_ROOT) + "/", "")


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw format: ``frame;frame;... count`` per line, root first."""
    samples = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            samples.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return samples


def centre_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, patterns in CENTRES:
            if any(p in frame for p in patterns):
                return name
    return "other"


def summarize(samples: list[tuple[list[str], int]], top: int = 25) -> dict[str, object]:
    total = sum(n for _, n in samples) or 1
    centres: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, n in samples:
        centres[centre_of(frames)] += n
        leaf[frames[-1]] += n

    def pct(counter: Counter[str], k: int) -> dict[str, float]:
        return {name: round(100 * n / total, 1) for name, n in counter.most_common(k)}

    return {
        "samples": total,
        "by_centre_pct": pct(centres, 99),
        "by_function_self_pct": pct(leaf, top),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench profile", description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=["chat", "stream"], default="chat")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--native", action="store_true", help="C frames too (pauses the node)")
    p.add_argument("--out", type=Path, default=Path("node-profile.txt"), help="raw stacks")
    p.add_argument("--node-log-level", default="info")
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("bench profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    settings = node.Settings(node_log_level=args.node_log_level)
    try:
        with tempfile.TemporaryDirectory(prefix="quorum-profile-") as tmpdir, Children() as kids:
            tmp = Path(tmpdir)
            _, engine_port, _ = node.start_engine(kids, tmp)
            proc, port, _ = node.start_node(kids, tmp, engine_port, settings)
            load = kids.start("load", [sys.executable, "-m", "bench.load", "--serve"])
            load.read_line(15)
            job = {
                "target": f"http://127.0.0.1:{port}",
                "kind": args.kind,
                "concurrency": args.concurrency,
                "duration_s": args.seconds + 3,
                "max_tokens": settings.stream_tokens,
                "timeout_s": 30.0,
            }
            load.write_line(json.dumps(job))
            time.sleep(1.5)  # warm: connections open, caches filled
            mode = ["--native"] if args.native else ["--nonblocking"]
            spy_args = [pyspy, "record", "-p", str(proc.pid), "-d", f"{args.seconds:g}"]
            spy_args += ["-r", str(args.rate), "-f", "raw", "-o", str(args.out.resolve()), *mode]
            spy = kids.start("py-spy", spy_args, log=tmp / "py-spy.log", pipes=False)
            if spy.proc.wait(args.seconds + 60) != 0:
                raise BenchError(f"py-spy failed{spy.log_tail()}")
            result = json.loads(load.read_line(args.seconds + 60))
    except BenchError as exc:
        print(f"bench profile: {exc}", file=sys.stderr)
        return 1
    summary = summarize(parse_collapsed(args.out.read_text().splitlines()))
    summary["load"] = {k: result.get(k) for k in ("requests", "rps", "p50_ms", "errors")}
    summary["raw_stacks"] = str(args.out)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
