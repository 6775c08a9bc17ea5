"""Start at login: the real file on Linux, paths and contents for macOS and Windows."""

from __future__ import annotations

import configparser
import plistlib
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from quorum import autostart
from quorum.autostart import (
    LAUNCH_AGENT_LABEL,
    default_command,
    entry_for,
    linux_entry,
    linux_path,
    macos_path,
    windows_path,
)
from quorum.cli import main

COMMAND = ("/opt/Quorum app/quorum", "tray", "--config", "/home/ann/my $cfg.yaml")


def desktop_exec(text: str) -> list[str]:
    """The argv a desktop environment reads back from an Exec line (escapes undone)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    value = parser["Desktop Entry"]["Exec"].replace("\\\\", "\\")
    return [arg.replace("%%", "%") for arg in exec_split(value)]


def exec_split(value: str) -> list[str]:
    """Split an Exec value as the Desktop Entry spec says (quotes; \\ escapes in them)."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in value:
        if escaped:
            current = (current or []) + [char]
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current = current or []
        elif char == " " and not quoted:
            if current is not None:
                args.append("".join(current))
            current = None
        else:
            current = (current or []) + [char]
    assert not quoted and not escaped, value
    if current is not None:
        args.append("".join(current))
    return args


def test_linux_path_follows_xdg_config_home() -> None:
    home = PurePosixPath("/home/ann")
    assert linux_path({}, home) == home / ".config/autostart/quorum.desktop"
    assert linux_path({"XDG_CONFIG_HOME": "/x/cfg"}, home) == PurePosixPath(
        "/x/cfg/autostart/quorum.desktop"
    )
    # The spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    assert linux_path({"XDG_CONFIG_HOME": "rel"}, home) == home / ".config/autostart/quorum.desktop"


def test_linux_entry_runs_the_command_with_its_arguments_intact() -> None:
    text = linux_entry(COMMAND)
    assert desktop_exec(text) == list(COMMAND)
    assert "Type=Application\n" in text and "Terminal=false\n" in text
    assert desktop_exec(linux_entry(["/usr/bin/quorum", "tray", "100%"])) == [
        "/usr/bin/quorum",
        "tray",
        "100%",
    ]


def test_macos_launch_agent() -> None:
    home = PurePosixPath("/Users/ann")
    entry = entry_for("darwin", COMMAND, env={}, home=home)
    assert entry.path == macos_path(home)
    assert str(entry.path) == f"/Users/ann/Library/LaunchAgents/{LAUNCH_AGENT_LABEL}.plist"
    plist = plistlib.loads(entry.content)
    assert plist["Label"] == LAUNCH_AGENT_LABEL
    assert plist["ProgramArguments"] == list(COMMAND)
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is False
    assert plist["StandardErrorPath"] == "/Users/ann/Library/Logs/quorum.log"


def test_windows_startup_shortcut() -> None:
    home = PureWindowsPath("C:/Users/ann")
    env = {"APPDATA": r"C:\Users\ann\AppData\Roaming"}
    command = (r"C:\Program Files\Quorum\quorum.exe", "tray", "--config", r"C:\it's\c.yaml")
    entry = entry_for("win32", command, env=env, home=home)
    startup = r"C:\Users\ann\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup"
    assert str(entry.path) == startup + r"\Quorum.lnk"
    assert windows_path({}, home) == entry.path  # APPDATA's default
    script = entry.content.decode()
    assert f"CreateShortcut('{startup}\\Quorum.lnk')" in script
    assert r"$link.TargetPath = 'C:\Program Files\Quorum\quorum.exe'" in script
    assert r"$link.Arguments = 'tray --config C:\it''s\c.yaml'" in script  # '' in PS quotes
    assert r"$link.WorkingDirectory = 'C:\Program Files\Quorum'" in script
    assert script.rstrip().endswith("$link.Save()")


@pytest.mark.parametrize(
    ("platform", "key"), [("linux", "linux"), ("freebsd14", "linux"), ("darwin", "darwin")]
)
def test_platforms(platform: str, key: str) -> None:
    assert entry_for(platform, COMMAND, env={}, home=PurePosixPath("/h")).platform == key


def test_default_command() -> None:
    assert default_command(executable="/app/quorum", frozen=True, platform="linux") == (
        "/app/quorum",
        "tray",
    )
    assert default_command(
        executable="/usr/bin/python3", frozen=False, platform="linux", config="/c.yaml"
    ) == ("/usr/bin/python3", "-m", "quorum.cli", "tray", "--config", "/c.yaml")
    assert default_command()[:4] == (sys.executable, "-m", "quorum.cli", "tray")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes the XDG entry")
def test_on_off_status_write_and_remove_the_desktop_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    desktop = tmp_path / "cfg" / "autostart" / "quorum.desktop"
    config = tmp_path / "my config.yaml"

    assert main(["autostart", "status"]) == 1
    assert not autostart.is_enabled()

    assert main(["autostart", "on", "--config", str(config)]) == 0
    assert desktop.is_file() and autostart.is_enabled()
    argv = desktop_exec(desktop.read_text())
    assert argv == [sys.executable, "-m", "quorum.cli", "tray", "--config", str(config)]
    assert main(["autostart", "on"]) == 0  # again: replaced, not duplicated
    assert [p.name for p in desktop.parent.iterdir()] == ["quorum.desktop"]
    assert main(["autostart", "status"]) == 0

    assert main(["autostart", "off"]) == 0
    assert not desktop.exists() and not autostart.is_enabled()
    assert main(["autostart", "off"]) == 0  # idempotent
    out = capsys.readouterr().out
    assert f"start at login: on ({desktop})" in out
    assert f"start at login: off (removed {desktop})" in out
    assert out.rstrip().endswith("start at login: off")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes the XDG entry")
def test_an_unwritable_place_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "cfg"
    blocker.write_text("a file where the directory should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
    assert main(["autostart", "on"]) == 1
    assert "cannot write" in capsys.readouterr().err
