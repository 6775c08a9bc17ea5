"""Child processes of a benchmark run: started in their own session, always killed.

Every child is started with ``start_new_session`` (its own process group, so
the group is killed with it) and, on Linux, with a parent-death signal (so a
benchmark killed with SIGKILL leaves nothing behind). :class:`Children` is a
context manager whose exit terminates every group it started, then kills
what is left after a grace period, even when the run failed.

The ``/proc`` readers give resident memory and CPU time of a process, for
the node's memory and the CPU each process spends per request.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

BENCH_ROOT = Path(__file__).resolve().parent.parent  # the directory holding bench/
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not run (a process did not start, a port did not answer)."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the benchmark process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One started process; ``lines`` reads its stdout as JSON-lines, bounded in time."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path | None) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.started = time.perf_counter()
        self._pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write_line(self, line: str) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            raise BenchError(f"{self.name} has no stdin")
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def read_line(self, timeout_s: float) -> str:
        """The next line of stdout; ``BenchError`` if none comes in time or the process ends."""
        stdout = self.proc.stdout
        if stdout is None:
            raise BenchError(f"{self.name} has no stdout")
        deadline = time.monotonic() + timeout_s
        fd = stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.name} said nothing for {timeout_s:g} s")
                if not sel.select(left):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    raise BenchError(f"{self.name} exited ({self.proc.poll()}){self.log_tail()}")
                self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n  " + "\n  ".join(tail) if tail else ""


class Children:
    """Starts children; on exit (normal or not) terminates and reaps every one of them."""

    def __init__(self, grace_s: float = 3.0) -> None:
        self._children: list[Child] = []
        self._grace = grace_s

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        pipes: bool = True,
    ) -> Child:
        out: Any = subprocess.PIPE if pipes else subprocess.DEVNULL
        with contextlib.ExitStack() as stack:
            err: IO[bytes] | int = (
                stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
            )
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=BENCH_ROOT,
                env=env if env is not None else child_env(),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        child = Child(name, proc, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, grace_s: float | None = None) -> None:
        """Stop one child now: SIGTERM, then SIGKILL after ``grace_s`` (0: SIGKILL at once)."""
        if child in self._children:
            self._children.remove(child)
            self._stop([child], self._grace if grace_s is None else grace_s)

    def stop_all(self) -> None:
        children, self._children = self._children, []
        self._stop(children, self._grace)

    def _stop(self, children: list[Child], grace_s: float) -> None:
        for child in children:
            _signal_group(child.proc, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
            _signal_group(child.proc, signal.SIGKILL)  # anything its group left behind
            for pipe in (child.proc.stdin, child.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``QUORUM_*`` setting, with ``bench`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The status of ``GET url``; ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def fetch(
    url: str,
    body: bytes | None = None,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of ``GET url`` (``POST`` of JSON ``body``); ``BenchError``
    when nothing answers."""
    sent = {"Content-Type": "application/json"} if body is not None else {}
    sent.update(headers or {})
    request = urllib.request.Request(url, data=body, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(resp.status), dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers.items()), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def poll(what: str, check: Callable[[], T | None], timeout_s: float, poll_s: float = 0.1) -> T:
    """``check()`` until it returns something other than ``None``; ``BenchError`` after
    ``timeout_s``. A ``BenchError`` from ``check`` counts as ``None`` until the end."""
    deadline = time.monotonic() + timeout_s
    last: str = ""
    while True:
        try:
            value = check()
        except BenchError as exc:
            value, last = None, f": {exc}"
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} after {timeout_s:g} s{last}")
        time.sleep(poll_s)


def wait_http_ok(
    child: Child,
    url: str,
    timeout_s: float,
    poll_s: float = 0.01,
    status: Callable[[str, float], int | None] = http_status,
) -> float:
    """Seconds from the child's start until ``GET url`` answers 200 (``status`` asks it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited ({child.proc.returncode}){child.log_tail()}")
        if status(url, poll_s * 50) == 200:
            return time.perf_counter() - child.started
        time.sleep(poll_s)
    raise BenchError(f"{child.name}: {url} not healthy after {timeout_s:g} s{child.log_tail()}")


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """``VmRSS`` (or ``VmHWM``, the peak) of ``pid`` in MiB, from ``/proc/PID/status``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def loads_library(pid: int, fragment: str) -> bool | None:
    """Whether ``pid`` has a file whose path contains ``fragment`` mapped (``/proc/PID/maps``)."""
    try:
        return fragment in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` so far, from ``/proc/PID/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
