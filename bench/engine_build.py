"""``python3 -m bench.engine_build``: what the portable build of the embedded engine costs.

The embedded engine ships built for any CPU (``quorum.engines.portable``: no
``-march=native``). This measures its generation speed against a native build
of the same llama-cpp-python version on the same machine, in the same run,
alternating rounds, each build in its own process (a native build may die of
SIGILL: that is reported as such, not as a failure of the bench).

Options: ``--native-wheel FILE`` reuses a native wheel (else one is built,
minutes on 2 cores, kept in Quorum's cache), ``--rounds N``, ``--tokens N``,
``--json FILE``. Prints one JSON report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from quorum.engines import portable
from quorum.engines.crash import describe_exit

_MEASURE = """
import json, sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=1024, chat_format="gemma", verbose=False)
messages = [{"role": "user", "content": "Write a very long story about a lighthouse."}]
llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0)  # warm up
began = time.perf_counter()
out = llm.create_chat_completion(messages=messages, max_tokens=int(sys.argv[2]), temperature=0)
took = time.perf_counter() - began
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "seconds": took}))
"""


def _native_wheel(python: str) -> Path:
    folder = portable.cache_root() / (
        f"llama-cpp-python-{portable.LLAMA_CPP_PYTHON_VERSION}-{portable.python_tag()}"
        f"-{platform.machine().lower()}-native-bench-only"
    )
    try:
        return portable.wheel_in(folder)
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON", "FORCE_CMAKE": "1"}
    subprocess.run(
        [
            *(python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-binary"),
            *("llama-cpp-python", "--wheel-dir", str(folder)),
            f"llama-cpp-python=={portable.LLAMA_CPP_PYTHON_VERSION}",
        ],
        check=True,
        env=env,
    )
    return portable.wheel_in(folder)


def _measure(python: str, path: str | None, model: Path, tokens: int) -> dict[str, Any]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path
    done = subprocess.run(
        [python, "-c", _MEASURE, str(model), str(tokens)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        ended = describe_exit(done.returncode)
        return {"ok": False, "exit": ended.summary, "wrong_cpu": ended.wrong_cpu}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["ok"] = True
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.engine_build", description=__doc__)
    p.add_argument("--native-wheel", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    python = sys.executable
    model = portable.model_path()
    marker = json.loads((Path(sys.prefix) / portable.MARKER).read_text())
    wheel = args.native_wheel or _native_wheel(python)
    runs: dict[str, list[dict[str, Any]]] = {"shipped": [], "native": []}
    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        for _ in range(args.rounds):
            runs["shipped"].append(_measure(python, None, model, args.tokens))
            runs["native"].append(_measure(python, unpacked, model, args.tokens))
    report: dict[str, Any] = {
        "bench": "engine_build",
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "llama_cpp_python": portable.LLAMA_CPP_PYTHON_VERSION,
        "shipped_level": marker.get("level"),
        "tokens": args.tokens,
        "rounds": args.rounds,
    }
    for name, results in runs.items():
        speeds = [r["tokens_per_s"] for r in results if r["ok"]]
        report[name] = {
            "runs": len(results),
            "ok": len(speeds),
            "tokens_per_s_median": round(statistics.median(speeds), 1) if speeds else None,
            "tokens_per_s": [round(s, 1) for s in speeds],
            "failures": sorted({r["exit"] for r in results if not r["ok"]}),
        }
    shipped = report["shipped"]["tokens_per_s_median"]
    native = report["native"]["tokens_per_s_median"]
    report["shipped_vs_native"] = round(shipped / native, 3) if shipped and native else None
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if report["shipped"]["ok"] == args.rounds else 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
