"""LiteLLM's proxy in front of the bench's fake engine, from the bench's own environment.

``litellm[proxy]`` is not a dependency of Quorum: :func:`ensure` installs it on
first use into ``bench/.venv-litellm`` (``python3 -m venv``, then pip from the
package index; gitignored), together with matplotlib for ``bench plots``.
When it cannot be installed (no index, no matching release), the node suite
reports LiteLLM as unavailable, with pip's reason, and measures the rest.

:func:`start` runs ``litellm --config FILE`` as its own process, one worker
(one process, as a node is), with a ``model_list`` that sends ``bench-model``
to the fake engine as an ``openai/`` model with ``api_base``; ready when
``/health/liveliness`` answers 200 and one chat through it is answered. It
keeps LiteLLM's defaults otherwise (its access log included: the node logs a
line per request too), except that the model cost map is read from the
package instead of fetched at start (``LITELLM_LOCAL_MODEL_COST_MAP``): the
bench reaches nothing beyond loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.engine import MODEL
from bench.procs import BENCH_ROOT, BenchError, Child, Children, child_env, fetch, wait_http_ok

VENV = BENCH_ROOT / "bench" / ".venv-litellm"
# Pinned: the newest release whose requirements install here. 1.103.0 and later require
# certifi>=2026.10.19, which the package index this machine reaches does not have;
# 1.107.0 was a compromised release and is gone from the index.
LITELLM = "litellm[proxy]==1.102.4"
MATPLOTLIB = "matplotlib"
INSTALL_TIMEOUT_S = 1200.0


class Unavailable(BenchError):
    """The bench's environment could not be made (why: the message)."""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _installed(marker: Path) -> set[str]:
    try:
        return set(marker.read_text().split())
    except OSError:
        return set()


def ensure(specs: Sequence[str], progress: Callable[[str], None]) -> Path:
    """The environment's python, with ``specs`` pip-installed (once: a marker remembers)."""
    marker = VENV / ".bench-installed"
    if set(specs) <= _installed(marker) and venv_python().exists():
        return venv_python()
    if not venv_python().exists():
        progress(f"creating {VENV.relative_to(BENCH_ROOT)} (python3 -m venv)")
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True
        )
        if made.returncode != 0:
            raise Unavailable(f"python3 -m venv failed: {_tail(made.stderr or made.stdout)}")
    progress(f"pip install {' '.join(specs)} into {VENV.relative_to(BENCH_ROOT)} (first use)")
    try:
        pip = [str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *specs],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"pip install {' '.join(specs)} took over {INSTALL_TIMEOUT_S:g} s"
        ) from None
    if done.returncode != 0:
        raise Unavailable(f"pip install {' '.join(specs)} failed: {_tail(done.stderr)}")
    marker.write_text("\n".join(sorted(_installed(marker) | set(specs))) + "\n")
    return venv_python()


def _tail(text: str, lines: int = 3) -> str:
    kept = [
        line
        for line in text.strip().splitlines()
        if line.strip() and not line.startswith("WARNING: Location")
    ]
    text = " | ".join(kept[-lines:]) or "no output"
    return re.sub(r"\(from versions: [^)]*\)", "(from versions: ...)", text)[:600]


def version() -> str | None:
    """The installed litellm's version, read from the environment's metadata."""
    for meta in VENV.glob("lib/python*/site-packages/litellm-*.dist-info/METADATA"):
        for line in meta.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def start(
    kids: Children, tmp: Path, engine_port: int, port: int, timeout_s: float
) -> tuple[Child, float]:
    """LiteLLM's proxy on ``port`` in front of the engine; (child, seconds to ready)."""
    config = tmp / "litellm.yaml"
    model = {
        "model_name": MODEL,
        "litellm_params": {
            "model": f"openai/{MODEL}",
            "api_base": f"http://127.0.0.1:{engine_port}/v1",
            "api_key": "unused",
        },
    }
    # JSON is YAML: no dependency needed here to write it.
    config.write_text(json.dumps({"model_list": [model]}, indent=2) + "\n")
    litellm = VENV / "bin" / "litellm"
    args = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "1"]
    env = child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    env.pop("PYTHONPATH", None)  # its own environment only
    child = kids.start("litellm", args, env=env, log=tmp / "litellm.log", pipes=False)
    ready = wait_http_ok(
        child, f"http://127.0.0.1:{port}/health/liveliness", timeout_s, poll_s=0.05
    )
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    status, _, text = fetch(
        f"http://127.0.0.1:{port}/v1/chat/completions", body.encode(), timeout_s=30
    )
    if status != 200:
        raise BenchError(f"a chat through LiteLLM answered {status}: {text[:300]!r}")
    return child, ready
