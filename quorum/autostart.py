"""Start the tray at login: XDG autostart on Linux, a LaunchAgent on macOS, Startup on Windows.

What goes where is decided by pure functions of the platform, the environment
and the command to run (:func:`entry_for`), so every platform is tested on
any machine; :func:`enable`, :func:`disable` and :func:`is_enabled` apply them
to this machine.

- Linux and other XDG desktops: ``$XDG_CONFIG_HOME/autostart/quorum.desktop``
  (``~/.config/autostart/`` by default), a desktop entry whose ``Exec`` runs
  ``quorum tray``.
- macOS: ``~/Library/LaunchAgents/io.quorum.tray.plist``, ``RunAtLoad`` true,
  not kept alive (Quit in the menu means quit). launchd reads it at the next
  login; it is not loaded now, since the tray that asked is already running.
- Windows: ``Quorum.lnk`` in ``%APPDATA%\\Microsoft\\Windows\\Start Menu\\Programs\\Startup``,
  a shortcut made by PowerShell's ``WScript.Shell`` (a ``.lnk`` runs a windowed
  program without the console a ``.cmd`` would flash).

The command is the running program: the frozen app's executable in a
PyInstaller build, else this interpreter with ``-m quorum.cli tray``
(``pythonw.exe`` on Windows, for no console window).
"""

from __future__ import annotations

import logging
import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from quorum.errors import AutostartError

log = logging.getLogger("quorum.autostart")

LAUNCH_AGENT_LABEL = "io.quorum.tray"
DESKTOP_FILE = "quorum.desktop"
SHORTCUT_FILE = "Quorum.lnk"
POWERSHELL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Entry:
    """The file that makes the tray start at login, and what it holds.

    ``content`` is the file's bytes, except on Windows, where the shortcut is
    binary and made by PowerShell: there it is the PowerShell script (UTF-8).
    """

    platform: str  # "linux", "darwin" or "win32"
    path: PurePath
    content: bytes


def platform_key(platform: str = sys.platform) -> str:
    """``sys.platform`` reduced to the three ways of starting at login."""
    if platform.startswith("win") or platform == "cygwin":
        return "win32"
    return "darwin" if platform == "darwin" else "linux"


def default_command(
    *,
    config: str | None = None,
    executable: str | None = None,
    frozen: bool | None = None,
    platform: str | None = None,
) -> tuple[str, ...]:
    """The command line that starts the tray as this program was started.

    Unset arguments are this process's (``sys.executable``, ``sys.frozen``, ``sys.platform``).
    """
    executable = executable or sys.executable
    platform = platform or sys.platform
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    if frozen:
        command: list[str] = [executable, "tray"]
    else:
        python = executable
        if platform_key(platform) == "win32":
            windowed = PureWindowsPath(executable).with_name("pythonw.exe")
            python = str(windowed) if Path(windowed).exists() else executable
        command = [python, "-m", "quorum.cli", "tray"]
    if config:
        command += ["--config", config]
    return tuple(command)


# -- Linux (freedesktop.org) ---------------------------------------------------


def linux_path(env: Mapping[str, str], home: PurePath) -> PurePosixPath:
    """``$XDG_CONFIG_HOME/autostart/quorum.desktop``; a relative XDG_CONFIG_HOME is ignored."""
    base = env.get("XDG_CONFIG_HOME", "")
    root = PurePosixPath(base) if base.startswith("/") else PurePosixPath(home) / ".config"
    return root / "autostart" / DESKTOP_FILE


def _exec_arg(arg: str) -> str:
    """One argument of a desktop entry's ``Exec`` key, quoted as the spec asks."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`="):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def linux_entry(command: Sequence[str]) -> str:
    """The desktop entry that starts ``command`` at login."""
    exec_line = " ".join(_exec_arg(a) for a in command)
    # The Exec value is itself a string value: its backslashes are escaped once more.
    exec_line = exec_line.replace("\\", "\\\\")
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Version=1.0\n"
        "Name=Quorum\n"
        "Comment=Share this machine's models with your Quorum cluster\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "Categories=Network;\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


# -- macOS -------------------------------------------------------------------------


def macos_path(home: PurePath) -> PurePosixPath:
    return PurePosixPath(home) / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def macos_entry(command: Sequence[str], home: PurePath) -> bytes:
    """A LaunchAgent that runs ``command`` once at login, logging to ~/Library/Logs."""
    log_path = str(PurePosixPath(home) / "Library" / "Logs" / "quorum.log")
    return plistlib.dumps(
        {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": list(command),
            "RunAtLoad": True,
            "KeepAlive": False,
            "ProcessType": "Interactive",
            "StandardOutPath": log_path,
            "StandardErrorPath": log_path,
        }
    )


# -- Windows -----------------------------------------------------------------------


def windows_path(env: Mapping[str, str], home: PurePath) -> PureWindowsPath:
    """The Startup folder shortcut: under ``%APPDATA%`` (default ``~\\AppData\\Roaming``)."""
    appdata = env.get("APPDATA") or str(PureWindowsPath(home) / "AppData" / "Roaming")
    startup = PureWindowsPath(appdata, "Microsoft", "Windows", "Start Menu", "Programs", "Startup")
    return startup / SHORTCUT_FILE


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _win_arg(arg: str) -> str:
    """One argument as Windows' command-line parser reads it back (CommandLineToArgvW)."""
    return subprocess.list2cmdline([arg])


def windows_entry(command: Sequence[str], path: PureWindowsPath) -> bytes:
    """The PowerShell script that writes the shortcut running ``command``."""
    target, *args = command
    lines = [
        "$ErrorActionPreference = 'Stop'",
        "$shell = New-Object -ComObject WScript.Shell",
        f"$link = $shell.CreateShortcut({_ps_quote(str(path))})",
        f"$link.TargetPath = {_ps_quote(target)}",
        f"$link.Arguments = {_ps_quote(' '.join(_win_arg(a) for a in args))}",
        f"$link.WorkingDirectory = {_ps_quote(str(PureWindowsPath(target).parent))}",
        "$link.Description = 'Quorum: share this machine''s models with your cluster'",
        "$link.WindowStyle = 7",  # minimized: a windowed program shows only its tray icon
        "$link.Save()",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


# -- choosing and applying -----------------------------------------------------------


def entry_for(
    platform: str, command: Sequence[str], *, env: Mapping[str, str], home: PurePath
) -> Entry:
    """Where this platform keeps the start-at-login entry, and what goes in it."""
    key = platform_key(platform)
    if key == "win32":
        win_path = windows_path(env, home)
        return Entry(key, win_path, windows_entry(command, win_path))
    if key == "darwin":
        return Entry(key, macos_path(home), macos_entry(command, home))
    return Entry(key, linux_path(env, home), linux_entry(command).encode())


def current_entry(command: Sequence[str] | None = None) -> Entry:
    """The entry for this machine, user and program."""
    return entry_for(sys.platform, command or default_command(), env=os.environ, home=Path.home())


def is_enabled() -> bool:
    """Whether the tray starts at login (the entry exists)."""
    return Path(current_entry().path).exists()


def enable(command: Sequence[str] | None = None) -> Path:
    """Write the entry (replacing an older one); returns its path."""
    entry = current_entry(command)
    path = Path(entry.path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry.platform == "win32":
            _run_powershell(entry.content)
        else:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(entry.content)
            tmp.replace(path)
    except OSError as exc:
        raise AutostartError(f"cannot write {path}: {exc.strerror or exc}") from None
    log.info("start at login: on (%s)", path)
    return path


def disable() -> Path | None:
    """Remove the entry; returns the path removed, or None when there was none."""
    path = Path(current_entry().path)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AutostartError(f"cannot remove {path}: {exc.strerror or exc}") from None
    log.info("start at login: off (removed %s)", path)
    return path


def _run_powershell(script: bytes) -> None:
    try:
        done = subprocess.run(
            ["powershell", "-NoProfile", "-NonInteractive", "-Command", "-"],
            input=script,
            capture_output=True,
            timeout=POWERSHELL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AutostartError(f"cannot run PowerShell to make the shortcut: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise AutostartError(
            "PowerShell could not make the shortcut: " + (message[-1] if message else "failed")
        )


def cli(action: str, *, config: str | None = None) -> int:
    """``quorum autostart on|off|status``: prints what it did; 0 on success, 1 when off."""
    if action == "on":
        path = enable(default_command(config=str(Path(config).resolve()) if config else None))
        print(f"start at login: on ({path})")
        return 0
    if action == "off":
        removed = disable()
        print(f"start at login: off (removed {removed})" if removed else "start at login: off")
        return 0
    path = Path(current_entry().path)
    on = path.exists()
    print(f"start at login: {'on' if on else 'off'} ({path})")
    return 0 if on else 1
