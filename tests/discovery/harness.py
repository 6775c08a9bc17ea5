"""Processes for the multi-host discovery tests: discovery nodes and an avahi-daemon.

:class:`Node` runs ``tests.discovery.mdns_node`` in a :class:`~tests.netns.Lan`
host and collects its JSON-line events; :meth:`Node.wait_for` waits for one
with a deadline (never a bare sleep). :class:`Avahi` runs a private
dbus-daemon and an avahi-daemon in a host so ``avahi-browse`` can look at the
LAN as an independent mDNS implementation would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.netns import TIMEOUT_FACTOR, Host, Lan, stop_process

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0 * TIMEOUT_FACTOR

Event = dict[str, Any]


class Node:
    """One discovery node process; its events accumulate in :attr:`events`."""

    def __init__(
        self,
        lan: Lan,
        host: Host,
        log_dir: Path,
        *,
        node_id: str,
        name: str,
        token: str,
        models: str = "",
    ) -> None:
        self.host = host
        self.node_id = node_id
        self.log_path = log_dir / f"{node_id}.log"
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._log = self.log_path.open("w")
        argv = [sys.executable, "-W", "error", "-m", "tests.discovery.mdns_node"]
        argv += ["--node-id", node_id, "--name", name, "--token", token, "--models", models]
        self.process = lan.popen(
            host,
            argv,
            stdin=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=str(REPO),
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{node_id}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def wait_for(
        self,
        what: str,
        predicate: Callable[[Event], bool],
        *,
        after: int = 0,
        timeout: float = DEADLINE_S,
    ) -> int:
        """Index of the first event at or after ``after`` matching ``predicate``.

        Fails the test, showing the events and log tail, after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.events)):
                    if predicate(self.events[index]):
                        return index
                remaining = deadline - time.monotonic()
                # The reader appends under this lock before it ends, so a dead
                # reader means nothing more will come.
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(
                        f"{self.node_id}: no {what} within {timeout:.0f}s;\n"
                        f"events: {self.events}\nlog tail:\n{self.log_tail()}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self, timeout: float = DEADLINE_S) -> int | None:
        """Ask the node to quit (goodbye sent), wait, and return its exit code."""
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        code = stop_process(self.process)
        self._reader.join(timeout)
        self._log.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def found(self, node_id: str) -> Callable[[Event], bool]:
        return lambda e: e["event"] == "found" and e["node_id"] == node_id

    def seen_ids(self) -> set[str]:
        with self._changed:
            return {e["node_id"] for e in self.events if "node_id" in e}


@dataclass(frozen=True, slots=True)
class Resolved:
    """One ``=`` line of ``avahi-browse -rpt``."""

    interface: str
    protocol: str
    name: str
    service_type: str
    domain: str
    host_name: str
    address: str
    port: int
    txt: tuple[str, ...]


class Avahi:
    """A private system bus and an avahi-daemon inside ``host``; needs avahi-daemon, avahi-utils.

    The bus listens on a socket in ``workdir`` (``DBUS_SYSTEM_BUS_ADDRESS``
    points avahi-daemon and avahi-browse to it); avahi-daemon runs as root
    without chroot, with a tmpfs over ``/run`` in its own mount namespace (so
    its pid file cannot clash with a host avahi), IPv4 only, on ``eth0`` only,
    publishing nothing.
    """

    def __init__(self, lan: Lan, host: Host, workdir: Path) -> None:
        self.lan = lan
        self.host = host
        self.workdir = workdir
        self.bus = workdir / "bus"
        self.log_path = workdir / "daemons.log"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus}"}

    def start(self, timeout: float = DEADLINE_S) -> None:
        """Start dbus-daemon and avahi-daemon; return once avahi answers on the bus."""
        bus_conf = self.workdir / "bus.conf"
        bus_conf.write_text(_BUS_CONF.format(socket=self.bus))
        avahi_conf = self.workdir / "avahi-daemon.conf"
        avahi_conf.write_text(_AVAHI_CONF.format(interface=self.host.ifname))
        log = self.log_path.open("w")
        try:
            self.lan.popen(
                self.host,
                ["dbus-daemon", f"--config-file={bus_conf}", "--nofork", "--nopidfile"],
                stdout=log,
                stderr=log,
            )
            _wait_until("the private dbus socket", self.bus.exists, timeout)
            script = (
                "mount -t tmpfs tmpfs /run && exec avahi-daemon"
                f" --file={avahi_conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title"
            )
            self.lan.popen(self.host, ["sh", "-c", script], stdout=log, stderr=log, env=self.env)
        finally:
            log.close()
        _wait_until(
            "avahi-daemon on the bus",
            lambda: self._avahi_browse("-a", "-p", "-t").returncode == 0,
            timeout,
        )

    def browse(self, service_type: str) -> list[Resolved]:
        """One ``avahi-browse -rpt service_type`` run, its resolved lines parsed."""
        result = self._avahi_browse("-r", "-p", "-t", service_type)
        return [_parse_resolved(line) for line in result.stdout.splitlines() if line[:2] == "=;"]

    def _avahi_browse(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lan.run(self.host, ["avahi-browse", *args], env=self.env)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f}s")
        time.sleep(0.1)


def _parse_resolved(line: str) -> Resolved:
    fields = line.split(";")
    txt = tuple(_unescape(t) for t in re.findall(r'"((?:[^"\\]|\\.)*)"', ";".join(fields[9:])))
    return Resolved(
        interface=fields[1],
        protocol=fields[2],
        name=_unescape(fields[3]),
        service_type=fields[4],
        domain=fields[5],
        host_name=_unescape(fields[6]),
        address=fields[7],
        port=int(fields[8]),
        txt=txt,
    )


def _unescape(text: str) -> str:
    """Undo avahi's escaping: ``\\DDD`` is a decimal byte, ``\\X`` is X."""
    raw = re.sub(
        rb"\\(\d{3}|.)",
        lambda m: bytes([int(m[1])]) if m[1].isdigit() else m[1],
        text.encode("utf-8"),
    )
    return raw.decode("utf-8", errors="replace")


_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
[reflector]
enable-reflector=no
"""
