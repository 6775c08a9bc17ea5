"""The tray on a real (virtual) desktop, on a LAN with two peers.

Xvfb runs a display with ``trayer`` as its system tray. Three network
namespaces make a LAN: host A runs the tray (``tests.desktop.tray_driver``:
``quorum tray``'s code in front of a fake Ollama), hosts B and C run plain
``quorum up`` nodes of the same cluster. The test looks at what a person
would see (the icon docked in the tray, its title, its colour, the menu pystray
holds) and uses the menu: Copy API URL, Open dashboard, Start at login, Pause
sharing (the mDNS advert goes, peers are refused, local use goes on), Quit.

Set ``QUORUM_UPDATE_SCREENSHOTS=1`` to refresh ``docs/tray.png`` from this run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

from quorum.secure import ClusterCA, ClusterTLS, Identity
from quorum.tray.icon import GREEN, GREY
from tests.desktop.xdisplay import XTray, missing_tools, wait_until
from tests.fakes import closed_port
from tests.netns import TIMEOUT_FACTOR, Host, Lan, require_netns, stop_process

REPO = Path(__file__).resolve().parents[2]
TOKEN = "qc_tray-live-test-token-0123456789"
DEADLINE_S = 30.0 * TIMEOUT_FACTOR
ICON_CLASS = "quorumSystemTrayIcon"

Event = dict[str, Any]


class Driver:
    """The tray driver process in a namespace; its JSON-line events collect in ``events``."""

    def __init__(self, lan: Lan, host: Host, workdir: Path, env: dict[str, str]) -> None:
        self.log_path = workdir / "tray.log"
        self._log = self.log_path.open("w")
        self.events: list[Event] = []
        self._changed = threading.Condition()
        argv = [sys.executable, "-W", "error", "-m", "tests.desktop.tray_driver"]
        argv += ["--name", "studio", "--token", TOKEN, "--data-dir", str(workdir / "a-data")]
        self.process = lan.popen(
            host, argv, stdin=subprocess.PIPE, stderr=self._log, env=env, cwd=str(REPO)
        )
        self._reader = threading.Thread(target=self._read, name="read-tray", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def ask(self, command: str, event: str) -> Event:
        """Send ``command`` and return the next ``event`` it answers with."""
        with self._changed:
            start = len(self.events)
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.wait(event, after=start)

    def wait(self, event: str, after: int = 0) -> Event:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: (
                    any(e["event"] == event for e in self.events[after:])
                    or not self._reader.is_alive()
                ),
                DEADLINE_S,
            )
            found = [e for e in self.events[after:] if e["event"] == event]
        if not (ok and found):
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGUSR1)  # the driver dumps its threads
                time.sleep(0.5)  # for the dump to reach the log before it is read
            raise AssertionError(f"no {event!r} from the tray; log:\n{self.log_tail(80)}")
        return found[0]

    def menu(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.ask("menu", "menu")["items"]
        return items

    def click(self, text: str) -> None:
        assert self.ask(f"click {text}", "clicked")["found"], f"no menu item {text!r}"

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def close(self) -> int | None:
        code = stop_process(self.process)
        self._reader.join(DEADLINE_S)
        self._log.close()
        return code


def http_from(
    lan: Lan, host: Host, url: str, token: str | None = None, member: Path | None = None
) -> tuple[int, Any]:
    """GET ``url`` from inside ``host``; (status, parsed JSON body). With ``member`` (a
    directory of :func:`member_tls`), over TLS with a member's client certificate."""
    script = (
        "import json,ssl,sys,urllib.request,urllib.error\n"
        "req=urllib.request.Request(sys.argv[1]); ctx=None\n"
        "if sys.argv[2]: req.add_header('Authorization','Bearer '+sys.argv[2])\n"
        "if sys.argv[3]:\n"
        "  ctx=ssl.create_default_context(cafile=sys.argv[3]+'/ca.pem')\n"
        "  ctx.check_hostname=False\n"
        "  ctx.load_cert_chain(sys.argv[3]+'/node-cert.pem',sys.argv[3]+'/identity-key.pem')\n"
        "try:\n  r=urllib.request.urlopen(req,timeout=5,context=ctx); s,b=r.status,r.read()\n"
        "except urllib.error.HTTPError as e: s,b=e.code,e.read()\n"
        "print(json.dumps([s,json.loads(b or 'null')]))\n"
    )
    argv = [sys.executable, "-c", script, url, token or "", str(member or "")]
    done = lan.run(host, argv)
    assert done.returncode == 0, done.stderr
    status, body = json.loads(done.stdout)
    return int(status), body


def member_tls(where: Path) -> Path:
    """A member's client certificate, made from the token as a node makes its own (nodes
    answer other machines over TLS only, and take members by their certificate)."""
    ClusterTLS(Identity.load_or_create(where), "client", TOKEN, where)
    (where / "ca.pem").write_text(ClusterCA.from_token(TOKEN).cert_pem)
    return where


def peer_names(lan: Lan, host: Host) -> set[str]:
    """Names of the online peers the node in ``host`` reports."""
    status, body = http_from(lan, host, "http://127.0.0.1:32768/quorum/v1/status")
    assert status == 200
    return {p["name"] for p in body["peers"] if p["online"]}


def eventually(what: str, check: Callable[[], bool]) -> None:
    wait_until(what, lambda: check() or None, DEADLINE_S)


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[XTray]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs the Debian packages: {' '.join(missing)}")
    with XTray(tmp_path) as x:
        yield x


def icon_colour(shot: Path, x: XTray, window: int) -> tuple[int, int, int] | None:
    """The most common colour inside the icon's window that stands out from its background
    (None while the icon is not drawn yet)."""
    g = x.geometry(window)
    region = Image.open(shot).convert("RGB").crop((g.x, g.y, g.x + g.width, g.y + g.height))
    colours = cast(
        "list[tuple[int, tuple[int, int, int]]]",
        region.getcolors(maxcolors=region.width * region.height) or [],
    )
    counted = sorted(colours, reverse=True)
    background = counted[0][1]
    return next(
        (
            c
            for _, c in counted
            if sum(abs(p - q) for p, q in zip(c, background, strict=True)) > 90
            and c != (255, 255, 255)
        ),
        None,
    )


def shows(x: XTray, window: int, shot: Path, colour: tuple[int, ...]) -> bool:
    """A screenshot now has the icon drawn in ``colour`` (the X server paints it a moment
    after the tray changed it: a busy machine showed the empty icon window)."""
    seen = icon_colour(x.screenshot(shot), x, window)
    return seen is not None and close_to(seen, colour[:3])


def close_to(a: tuple[int, ...], b: tuple[int, ...], slack: int = 24) -> bool:
    return all(abs(p - q) <= slack for p, q in zip(a, b, strict=False))


def save_docs_screenshot(shot: Path, x: XTray, window: int, target: Path) -> None:
    """The tray panel cropped from ``shot``, three times larger (nearest: real pixels)."""
    g = x.geometry(window)
    panel = x.geometry(x.search("--name", "^panel$")[0])
    image = Image.open(shot).convert("RGB")
    right = max(panel.x + panel.width, g.x + g.width) + 8
    crop = image.crop((0, 0, min(right, image.width), panel.y + panel.height))
    crop.resize((crop.width * 3, crop.height * 3), Image.Resampling.NEAREST).save(target)


def test_tray_icon_menu_pause_and_quit_on_a_lan_with_two_peers(
    desktop: XTray, tmp_path: Path
) -> None:
    require_netns()
    browser_log = tmp_path / "browser.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {browser_log}\n')
    browser.chmod(0o755)
    xdg = tmp_path / "xdg"
    env = {
        **desktop.env,
        "PYTHONPATH": str(REPO),
        "BROWSER": str(browser),
        "XDG_CONFIG_HOME": str(xdg),
        "PYSTRAY_BACKEND": "xorg",
    }
    peers_env = {**os.environ, "QUORUM_AUTODETECT__ENABLED": "false", "PYTHONPATH": str(REPO)}

    with Lan(3) as lan:
        a, b, c = lan.hosts
        peer_logs = []
        for host, name in ((b, "peer-b"), (c, "peer-c")):
            log = (tmp_path / f"{name}.log").open("w")
            peer_logs.append(log)
            argv = [sys.executable, "-m", "quorum.cli", "up", "--name", name, "--token", TOKEN]
            argv += ["--embedded", "off", "--data-dir", str(tmp_path / name)]
            lan.popen(host, argv, stdout=log, stderr=log, env=peers_env, cwd=str(REPO))
        tray = Driver(lan, a, tmp_path, env)
        try:
            # The icon docks in the tray, and its title reaches "2 peers".
            icon = wait_until(
                "the icon docked in trayer",
                lambda: desktop.docked_icon(ICON_CLASS),
                DEADLINE_S,
            )
            eventually("two peers in the title", lambda: "2 peers" in desktop.title(icon))
            assert desktop.title(icon) == "Quorum (studio): 2 models here · 2 peers · no relay"

            menu = tray.menu()
            assert [i["text"] for i in menu] == [
                "2 models here · 2 peers · no relay",
                "-",
                "Shared from this machine:",
                "   llama3.2:1b",
                "   qwen3:0.6b",
                "-",
                "Open dashboard",
                "Copy API URL",
                "-",
                "Pause sharing",
                "Start at login",
                "-",
                "Quit Quorum",
            ]
            by_text = {i["text"]: i for i in menu}
            assert by_text["Open dashboard"]["default"] and by_text["Open dashboard"]["enabled"]
            assert by_text["Pause sharing"]["checked"] is False
            assert by_text["Start at login"]["checked"] is False
            assert not by_text["   qwen3:0.6b"]["enabled"]

            shot = tmp_path / "tray.png"
            eventually("the icon drawn green", lambda: shows(desktop, icon, shot, GREEN))
            if os.environ.get("QUORUM_UPDATE_SCREENSHOTS"):
                save_docs_screenshot(shot, desktop, icon, REPO / "docs" / "tray.png")

            # Copy API URL and Open dashboard reach the desktop's clipboard and browser.
            tray.click("Copy API URL")
            eventually(
                "the API URL on the clipboard",
                lambda: desktop.clipboard() == "http://127.0.0.1:32768/v1",
            )
            tray.click("Open dashboard")
            eventually(
                "the browser asked for the dashboard",
                lambda: (
                    browser_log.exists()
                    and browser_log.read_text().strip() == "http://127.0.0.1:32768/"
                ),
            )

            # Start at login writes and removes the XDG autostart entry.
            entry = xdg / "autostart" / "quorum.desktop"
            tray.click("Start at login")
            eventually("the autostart entry", entry.exists)
            assert "-m quorum.cli tray" in entry.read_text()
            eventually(
                "Start at login checked",
                lambda: {i["text"]: i for i in tray.menu()}["Start at login"]["checked"] is True,
            )
            tray.click("Start at login")
            eventually("the autostart entry removed", lambda: not entry.exists())

            # Pause: the advert goes (peers drop us at once, on the goodbye), peers are
            # refused, this machine is still served.
            assert "studio" in peer_names(lan, b)
            tray.click("Pause sharing")
            eventually("Paused in the title", lambda: "Paused" in desktop.title(icon))
            eventually("peer-b forgets studio", lambda: "studio" not in peer_names(lan, b))
            eventually("peer-c forgets studio", lambda: "studio" not in peer_names(lan, c))
            member = member_tls(tmp_path / "member")
            status, body = http_from(lan, b, f"https://{a.address}:32768/v1/models", None, member)
            assert (status, body["error"]["code"]) == (403, "sharing_paused")
            status, body = http_from(lan, a, "http://127.0.0.1:32768/v1/models")
            assert status == 200 and {m["id"] for m in body["data"]} >= {"qwen3:0.6b"}
            assert {i["text"]: i for i in tray.menu()}["Pause sharing"]["checked"] is True
            shot = tmp_path / "paused.png"
            eventually("the icon drawn grey", lambda: shows(desktop, icon, shot, GREY))

            tray.click("Pause sharing")
            eventually("peer-b sees studio again", lambda: "studio" in peer_names(lan, b))
            status, _ = http_from(lan, b, f"https://{a.address}:32768/v1/models", None, member)
            assert status == 200

            # Quit: the process ends by itself, cleanly, and says goodbye.
            started = time.monotonic()
            tray.click("Quit Quorum")
            exited = tray.wait("exited")
            assert tray.process.wait(DEADLINE_S) == 0
            assert exited == {"event": "exited", "code": 0, "threads": []}
            assert time.monotonic() - started < 10 * TIMEOUT_FACTOR
            eventually("the icon gone", lambda: not desktop.search("--classname", ICON_CLASS))
            eventually("peer-b forgets studio", lambda: "studio" not in peer_names(lan, b))
        finally:
            code = tray.close()
            for log in peer_logs:
                log.close()
            # Shown by pytest only when the test fails.
            print("--- tray ---\n" + tray.log_tail(60))
            for name in ("peer-b", "peer-c"):
                tail = (tmp_path / f"{name}.log").read_text().splitlines()[-15:]
                print(f"--- {name} ---\n" + "\n".join(tail))
        assert code == 0, tray.log_tail()
    assert "Traceback" not in tray.log_path.read_text()
    shutil.rmtree(tmp_path / "a-data", ignore_errors=True)


def test_quorum_tray_started_before_the_panel_docks_when_it_appears(tmp_path: Path) -> None:
    """At login the tray may start before the desktop's panel: the icon must still appear."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs the Debian packages: {' '.join(missing)}")
    port = closed_port()
    with XTray(tmp_path, tray=False) as desktop:
        log_path = tmp_path / "tray.log"
        with log_path.open("w") as log:
            tray = subprocess.Popen(
                [
                    *(sys.executable, "-W", "error", "-m", "quorum.cli", "tray"),
                    *("--port", str(port), "--embedded", "off", "--no-mdns"),
                    *("--data-dir", str(tmp_path / "data")),
                ],
                stdout=log,
                stderr=log,
                env={
                    **desktop.env,
                    "QUORUM_AUTODETECT__ENABLED": "false",
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                    "PYSTRAY_BACKEND": "xorg",
                },
                cwd=str(REPO),
                text=True,
            )
        try:
            window = wait_until(
                "the icon's window (not docked: no tray yet)",
                lambda: next(iter(desktop.search("--classname", ICON_CLASS)), None),
                DEADLINE_S,
            )
            eventually("the node ready", lambda: "0 models here" in desktop.title(window))
            assert not desktop.docked_icons(ICON_CLASS)
            desktop.start_tray()
            wait_until("the icon docked", lambda: desktop.docked_icon(ICON_CLASS), DEADLINE_S)
            tray.send_signal(signal.SIGTERM)
            assert tray.wait(DEADLINE_S) == 0
        finally:
            stop_process(tray)
            print(log_path.read_text())  # shown by pytest only when the test fails
    text = log_path.read_text()
    assert text.count("no system tray to show the icon in yet") == 1
    assert "Traceback" not in text and "tray stopped" in text
