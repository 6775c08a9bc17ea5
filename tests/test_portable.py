"""The embedded engine is built for any CPU, and the install step proves it runs here.

A build for another CPU is simulated by a real shared library that executes an
illegal instruction, behind a stand-in ``llama_cpp`` package: the probe child
then dies from SIGILL exactly as a native build on the wrong machine does.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quorum.engines import portable
from quorum.engines.crash import describe_exit, explain
from quorum.engines.portable import Level, ProbeResult, Steps, ensure
from tests import wrong_cpu

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wrong_cpu_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to put first on PYTHONPATH: ``llama_cpp`` that dies with SIGILL."""
    return wrong_cpu.build(tmp_path_factory.mktemp("wrong-cpu"))


def _env_with(path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)])}


# -- pure decisions ------------------------------------------------------------------------


def test_exit_codes_in_plain_words() -> None:
    ill = describe_exit(-4)
    assert ill.signal_name == "SIGILL" and ill.wrong_cpu
    assert "illegal instruction" in ill.summary
    assert describe_exit(132).wrong_cpu  # a shell's 128 + 4
    seg = describe_exit(-11)
    assert seg.signal_name == "SIGSEGV" and not seg.wrong_cpu
    plain = describe_exit(1)
    assert plain.signal_name is None and plain.summary == "exited with status 1"
    text = explain(ill, "/venv/bin/python")
    assert "built for another CPU" in text
    assert "/venv/bin/python -m quorum.engines.portable --rebuild" in text


def test_no_level_asks_for_the_build_machines_cpu() -> None:
    for level in Level:
        args = portable.cmake_args(level)
        assert "-DGGML_NATIVE=OFF" in args
        assert "native" not in args.replace("GGML_NATIVE=OFF", "")
    baseline = portable.cmake_args(Level.BASELINE)
    for option in ("AVX", "AVX2", "FMA", "F16C", "AVX512", "AMX_INT8"):
        assert f"-DGGML_{option}=OFF" in baseline
    assert portable.levels("x86_64") == (Level.COMMON, Level.BASELINE)
    assert portable.levels("aarch64") == (Level.COMMON,)


def test_cache_keys_differ_by_everything_the_wheel_depends_on() -> None:
    keys = {
        portable.build_key(level, machine, tag)
        for level in Level
        for machine in ("x86_64", "aarch64")
        for tag in ("cp311", "cp312")
    }
    assert len(keys) == 8
    assert portable.LLAMA_CPP_PYTHON_VERSION in next(iter(keys))


class Script:
    """Steps whose probe answers from a list; records what was built and installed."""

    def __init__(self, results: list[ProbeResult], marker: dict[str, str] | None = None) -> None:
        self.results = results
        self.marker = marker
        self.built: list[Level] = []
        self.installed: list[Path] = []
        self.said: list[str] = []

    def steps(self) -> Steps:
        def build(level: Level) -> Path:
            self.built.append(level)
            return Path(f"/wheels/{level.value}.whl")

        def write(data: dict[str, str]) -> None:
            self.marker = data

        return Steps(
            build=build,
            install=self.installed.append,
            probe=lambda: self.results.pop(0),
            read_marker=lambda: self.marker,
            write_marker=write,
            say=self.said.append,
        )


OK = ProbeResult(True, None, "")
SIGILL = ProbeResult(False, describe_exit(-4), "")
BROKEN = ProbeResult(False, describe_exit(1), "ImportError: libgomp.so.1")


def test_a_working_install_is_kept() -> None:
    script = Script([OK], {"version": portable.LLAMA_CPP_PYTHON_VERSION, "level": "common"})
    ok, message = ensure(script.steps(), (Level.COMMON, Level.BASELINE))
    assert ok and "common" in message
    assert script.built == []


def test_a_build_for_another_cpu_is_replaced_by_a_more_portable_one() -> None:
    script = Script([SIGILL, OK])
    ok, message = ensure(script.steps(), (Level.COMMON, Level.BASELINE))
    assert ok and "baseline" in message
    assert script.built == [Level.COMMON, Level.BASELINE]
    assert script.marker is not None and script.marker["level"] == "baseline"
    assert any("trying a more portable one" in s for s in script.said)


def test_an_installed_build_that_crashes_is_rebuilt() -> None:
    marker = {"version": portable.LLAMA_CPP_PYTHON_VERSION, "level": "common"}
    script = Script([SIGILL, OK], marker)
    ok, _ = ensure(script.steps(), (Level.COMMON, Level.BASELINE))
    assert ok and script.built == [Level.BASELINE]


def test_when_no_build_runs_it_says_what_happened() -> None:
    script = Script([SIGILL, SIGILL])
    ok, message = ensure(script.steps(), (Level.COMMON, Level.BASELINE))
    assert not ok
    assert "no build of the embedded engine runs on this CPU" in message
    assert "SIGILL" in message


def test_another_failure_is_not_mistaken_for_the_cpu() -> None:
    script = Script([BROKEN])
    ok, message = ensure(script.steps(), (Level.COMMON, Level.BASELINE))
    assert not ok and "libgomp" in message
    assert script.built == [Level.COMMON]


# -- the real probe, against a library that raises SIGILL ----------------------------------


def test_the_probe_reports_a_build_for_another_cpu(wrong_cpu_build: Path, tmp_path: Path) -> None:
    result = portable.probe(sys.executable, tmp_path / "model.gguf", env=_env_with(wrong_cpu_build))
    assert not result.ok
    assert result.exit is not None and result.exit.signal_name == "SIGILL"
    assert "built for another CPU" in result.message()


def test_the_install_check_fails_loudly_with_the_fix(wrong_cpu_build: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "quorum.engines.portable", "--check"],
        env=_env_with(wrong_cpu_build),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "crashed with SIGILL (illegal instruction)" in done.stdout
    assert "-m quorum.engines.portable --rebuild" in done.stdout


# -- what is installed here ----------------------------------------------------------------


@pytest.mark.embedded
def test_the_installed_engine_runs_here_and_was_built_portably() -> None:
    marker = json.loads((Path(sys.prefix) / portable.MARKER).read_text())
    assert marker["version"] == portable.LLAMA_CPP_PYTHON_VERSION
    assert marker["level"] in {level.value for level in Level}
    done = subprocess.run(
        [sys.executable, "-m", "quorum.engines.portable", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generated a token" in done.stdout


@pytest.mark.embedded
def test_the_installed_cpu_library_uses_no_avx512_or_amx() -> None:
    """What pip's cache handed back is checked: a native build here would use AVX-512."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return  # the instruction sets checked below are x86's
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    objdump = shutil.which("objdump")
    assert objdump is not None, "binutils (objdump) comes with the compiler"
    asm = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(lib)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "ymm" in asm  # AVX2 is in the common level
    assert "zmm" not in asm  # AVX-512
    assert "tdpb" not in asm and "ldtilecfg" not in asm  # AMX
