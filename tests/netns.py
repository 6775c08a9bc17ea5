"""A private LAN of Linux network namespaces for multi-host tests.

``Lan(n)`` builds, under names unique to this run:

- one *switch* namespace holding a bridge ``br0`` (multicast snooping off);
- ``n`` *host* namespaces, each with loopback up and one ``eth0``, the end of
  a veth pair whose other end is a port of ``br0``; host ``i`` gets
  ``10.213.0.(i+1)/24`` and a route for 224.0.0.0/4 on ``eth0``.

Every link is created inside the namespaces, never in the caller's one, so
the host's network is untouched and traffic never leaves these namespaces.
``close()`` (also on ``__exit__``, and when building fails half-way) stops
every process started through the Lan, kills anything else left inside its
namespaces and deletes them, which deletes their links too.

Needs root and iproute2. :func:`require_netns` skips a test, with the reason,
when the machine cannot do this at all (not Linux, not root, namespaces not
permitted); a missing ``ip`` command fails instead, because CI must have it.
Timeouts scale with ``QUORUM_TEST_TIMEOUT_FACTOR``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import pytest

TIMEOUT_FACTOR = float(os.environ.get("QUORUM_TEST_TIMEOUT_FACTOR", "1"))  # as tests/harness.py
COMMAND_TIMEOUT_S = 10.0 * TIMEOUT_FACTOR
STOP_TIMEOUT_S = 5.0 * TIMEOUT_FACTOR
SUBNET = "10.213.0"


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the LAN: its namespace, interface and IPv4 address."""

    netns: str
    ifname: str
    address: str


@functools.cache
def netns_unavailable() -> str | None:
    """Why this machine cannot build a Lan, or None when it can. Probes once per process."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return None  # require_netns fails: root without iproute2 is a broken set-up
    name = f"qtprobe{os.getpid()}{secrets.token_hex(2)}"
    added = _ip("netns", "add", name, check=False)
    if added.returncode != 0:
        return f"cannot create a network namespace: {added.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def require_netns() -> None:
    """Skip the calling test when namespaces are impossible here; fail when iproute2 is missing."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("ip") is None:
        pytest.fail("the 'ip' command is missing: apt-get install -y iproute2")


class Lan:
    """``hosts`` namespaces on one bridge; use as a context manager."""

    def __init__(self, hosts: int = 2, *, subnet: str = SUBNET) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("a Lan has 1 to 200 hosts")
        self.prefix = f"qt{os.getpid() % 100000}{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = tuple(
            Host(f"{self.prefix}-h{i}", "eth0", f"{subnet}.{i + 1}") for i in range(hosts)
        )
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Lan:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            port = f"p{index}"
            self._add_netns(host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip(
                "-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", host.ifname, "netns", host.netns,
            )  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.ifname)
            _ip("-n", host.netns, "link", "set", host.ifname, "up")
            _ip("-n", host.netns, "route", "add", "224.0.0.0/4", "dev", host.ifname)

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)

    def popen(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside ``host``'s namespace (text mode); it is stopped on close."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else dict(env),
            cwd=cwd,
            text=True,
        )
        self._processes.append(process)
        return process

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s namespace to completion; output captured, not checked."""
        return subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            check=False,
        )

    def close(self) -> None:
        """Stop every process and delete every namespace of this Lan. Never raises; idempotent."""
        for process in self._processes:
            stop_process(process)
        self._processes.clear()
        for name in reversed(self._namespaces):
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name, check=False)
        self._namespaces.clear()


def stop_process(process: subprocess.Popen[str], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code (None if it would not die)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result
