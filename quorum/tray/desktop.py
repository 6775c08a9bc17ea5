"""The two desktop services the menu needs: the clipboard and the web browser.

The clipboard is reached through each platform's own command (``pbcopy`` on
macOS, ``clip`` on Windows, ``wl-copy`` under Wayland, ``xclip`` or ``xsel``
under X11), so the tray needs no GUI toolkit beyond pystray. The browser is
the standard library's :mod:`webbrowser` (which honours ``$BROWSER``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import webbrowser
from collections.abc import Mapping

log = logging.getLogger("quorum.tray")

CLIPBOARD_TIMEOUT_S = 5.0


def clipboard_commands(platform: str, env: Mapping[str, str]) -> list[list[str]]:
    """The commands that may put stdin on the clipboard, best first."""
    if platform == "darwin":
        return [["pbcopy"]]
    if platform.startswith("win"):
        return [["clip"]]
    commands = [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    if env.get("WAYLAND_DISPLAY"):
        commands.insert(0, ["wl-copy"])
    return commands


def copy_text(text: str) -> bool:
    """Put ``text`` on the clipboard; False (and a warning) when no way works."""
    for command in clipboard_commands(sys.platform, os.environ):
        if shutil.which(command[0]) is None:
            continue
        try:
            # xclip stays behind to serve the selection: never wait on its output pipes.
            done = subprocess.run(
                command,
                input=text.encode(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=CLIPBOARD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("%s failed: %s", command[0], exc)
            continue
        if done.returncode == 0:
            return True
    log.warning("could not copy to the clipboard: install xclip, xsel or wl-clipboard")
    return False


def open_url(url: str) -> bool:
    """Open ``url`` in the user's browser; False (and a warning) when none opens."""
    try:
        opened = webbrowser.open(url, new=2)
    except webbrowser.Error as exc:
        log.warning("could not open a browser for %s: %s", url, exc)
        return False
    if not opened:
        log.warning("no browser opened %s", url)
    return opened
