"""The copy-only floor of ``bench relay``: the engine's stream through processes that only
copy bytes.

On the relay route three processes stand between the load generator and the engine
(node B, the relay, node A), on the same cores as both. ``copy_chain`` puts three
``socat`` processes there instead: compiled, no parsing, no encryption, each write passed
on as it comes. The share of direct chunks/s that one stream keeps through them says how
much of the stream target this machine leaves to *any* route of three extra processes that
pass each write on. It is a reference, not a bound: a route that gathers an answer's
writes (as node A's engine client does) sends fewer messages than these copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.node import free_port
from bench.procs import Children, wait_http_ok

HOPS = 3


def copy_chain(kids: Children, tmp: Path, engine_port: int, hops: int = HOPS) -> int | None:
    """The port at the head of ``hops`` socat processes in a row ending at the engine;
    None where socat is not installed (``apt-get install socat``)."""
    socat = shutil.which("socat")
    if socat is None:
        return None
    port = engine_port
    for i in range(hops):
        head = free_port()
        listen = f"TCP-LISTEN:{head},bind=127.0.0.1,reuseaddr,fork,nodelay"
        args = [socat, "-b", "262144", listen, f"TCP:127.0.0.1:{port},nodelay"]
        copy = kids.start(f"copy-{i}", args, log=tmp / f"copy-{i}.log", pipes=False)
        wait_http_ok(copy, f"http://127.0.0.1:{head}/v1/models", 15)
        port = head
    return port
