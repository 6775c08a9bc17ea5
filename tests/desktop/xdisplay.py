"""A virtual X display with a real system tray, for the tray tests.

:class:`XTray` starts ``Xvfb`` (which reports its display number once it
accepts clients: ``-displayfd``), then ``trayer`` (a freedesktop.org system
tray host) and waits until trayer owns the tray selection. Its helpers read the
display as a person's desktop would show it: which icons are docked in the
tray (``xdotool``, ``xwininfo``), a window's title (``xprop``), and a
screenshot (ImageMagick's ``import``).

Needs the Debian packages xvfb, trayer, xdotool, x11-utils and imagemagick;
:func:`missing_tools` names the absent ones so a test can skip with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from Xlib import X  # type: ignore[import-untyped]
from Xlib.display import Display  # type: ignore[import-untyped]

from tests.netns import TIMEOUT_FACTOR, stop_process

TOOLS = {
    "Xvfb": "xvfb",
    "trayer": "trayer",
    "xdotool": "xdotool",
    "xprop": "x11-utils",
    "xwininfo": "x11-utils",
    "import": "imagemagick",
    "xclip": "xclip",
}
DEADLINE_S = 20.0 * TIMEOUT_FACTOR
TRAY_HEIGHT = 26

T = TypeVar("T")


def missing_tools() -> list[str]:
    """The Debian packages to install for the tools that are not on PATH."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Geometry:
    x: int
    y: int
    width: int
    height: int


class XTray:
    """Xvfb plus trayer; use as a context manager. ``display`` is e.g. ``":3"``."""

    def __init__(
        self, workdir: Path, *, width: int = 480, height: int = 120, tray: bool = True
    ) -> None:
        self.workdir = workdir
        self.with_tray = tray
        self.size = (width, height)
        self.display = ""
        self._processes: list[subprocess.Popen[str]] = []
        self._log = (workdir / "x.log").open("w")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display}

    def __enter__(self) -> XTray:
        try:
            self._start()
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

    def _start(self) -> None:
        width, height = self.size
        screen = f"{width}x{height}x24"
        xvfb = subprocess.Popen(
            # -noreset: the server must not restart when its last client leaves
            ["Xvfb", "-displayfd", "1", "-noreset", "-nolisten", "tcp", "-screen", "0", screen],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._processes.append(xvfb)
        assert xvfb.stdout is not None
        number = xvfb.stdout.readline().strip()  # written once the server accepts clients
        if not number.isdigit():
            raise AssertionError(f"Xvfb did not start: {self.log_tail()}")
        self.display = f":{number}"
        if self.with_tray:
            self.start_tray()

    def start_tray(self) -> None:
        """Start trayer; return once it owns the system tray selection (icons can dock)."""
        trayer = subprocess.Popen(
            [
                "trayer",
                "--edge",
                "top",
                "--align",
                "left",
                "--widthtype",
                "request",
                "--height",
                str(TRAY_HEIGHT),
                "--SetDockType",
                "true",
                "--transparent",
                "false",
                "--tint",
                "0x303030",
                "--expand",
                "true",
            ],
            stdout=self._log,
            stderr=self._log,
            env=self.env,
            text=True,
        )
        self._processes.append(trayer)
        wait_until("trayer owning the system tray", self._tray_owned)

    def _tray_owned(self) -> bool:
        connection = Display(self.display)
        try:
            owner = connection.get_selection_owner(connection.intern_atom("_NET_SYSTEM_TRAY_S0"))
            return bool(owner != X.NONE) and bool(self.search("--name", "^panel$"))
        finally:
            connection.close()

    def close(self) -> None:
        for process in reversed(self._processes):
            stop_process(process)
        self._processes.clear()
        self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join((self.workdir / "x.log").read_text().splitlines()[-lines:])

    # -- looking at the display -------------------------------------------------------

    def _run(self, *argv: str) -> str:
        done = subprocess.run(
            argv,
            capture_output=True,
            encoding="utf-8",
            errors="replace",  # xwininfo prints window names in Latin-1
            env=self.env,
            timeout=DEADLINE_S,
            check=False,
        )
        return done.stdout

    def search(self, *query: str) -> list[int]:
        """Window ids ``xdotool search`` finds (e.g. ``--classname quorumSystemTrayIcon``)."""
        return [int(w) for w in self._run("xdotool", "search", *query).split()]

    def docked_icons(self, classname: str) -> list[int]:
        """Icons of ``classname`` whose window sits inside trayer's panel."""
        panels = set(self.search("--name", "^panel$"))
        return [w for w in self.search("--classname", classname) if self._ancestors(w) & panels]

    def docked_icon(self, classname: str) -> int | None:
        """The first docked icon of ``classname``, or None while there is none."""
        icons = self.docked_icons(classname)
        return icons[0] if icons else None

    def _ancestors(self, window: int) -> set[int]:
        found: set[int] = set()
        while True:
            tree = self._run("xwininfo", "-tree", "-id", str(window))
            match = re.search(r"Parent window id: (0x[0-9a-f]+)", tree)
            if (
                match is None
                or int(match.group(1), 16) == 0
                or "(the root window)" in tree.split("Parent window id:", 1)[1].splitlines()[0]
            ):
                return found
            window = int(match.group(1), 16)
            found.add(window)

    def title(self, window: int) -> str:
        out = self._run("xprop", "-id", str(window), "WM_NAME")
        match = re.search(r'= "(.*)"$', out.strip())
        return match.group(1) if match else ""  # xprop converts STRING to the locale's text

    def geometry(self, window: int) -> Geometry:
        info = self._run("xwininfo", "-id", str(window))
        value = {
            key: int(re.search(rf"{label}:\s+(-?\d+)", info).group(1))  # type: ignore[union-attr]
            for key, label in (
                ("x", "Absolute upper-left X"),
                ("y", "Absolute upper-left Y"),
                ("width", "Width"),
                ("height", "Height"),
            )
        }
        return Geometry(**value)

    def screenshot(self, path: Path) -> Path:
        subprocess.run(
            ["import", "-window", "root", str(path)],
            env=self.env,
            timeout=DEADLINE_S,
            check=True,
            capture_output=True,
        )
        return path

    def clipboard(self) -> str:
        return self._run("xclip", "-o", "-selection", "clipboard")
