"""The PyInstaller build: it builds, the built ``quorum`` serves ``/healthz``, its tray docks.

Slow (about 20 s to build on two cores, plus the runs); needs PyInstaller
(``pip install pyinstaller``). The tray half also needs the X tools of
:mod:`tests.desktop.xdisplay`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.desktop.xdisplay import XTray, missing_tools, wait_until
from tests.fakes import closed_port
from tests.netns import TIMEOUT_FACTOR, stop_process

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "pyinstaller" / "quorum.spec"
BUILD_TIMEOUT_S = 600 * TIMEOUT_FACTOR
START_TIMEOUT_S = 30 * TIMEOUT_FACTOR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(900 * TIMEOUT_FACTOR))]


@pytest.fixture(scope="module")
def built_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    pytest.importorskip("PyInstaller", reason="pip install pyinstaller")
    work = tmp_path_factory.mktemp("pyinstaller")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}  # as on a build server
    done = subprocess.run(
        [
            *(sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN"),
            *("--distpath", str(work / "dist"), "--workpath", str(work / "build"), str(SPEC)),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=env,
        cwd=str(work),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    binary = work / "dist" / "quorum" / ("quorum.exe" if sys.platform == "win32" else "quorum")
    assert binary.is_file()
    yield binary


def get_json(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


def start(binary: Path, command: str, port: int, tmp: Path, **env: str) -> subprocess.Popen[str]:
    with (tmp / f"{command}.log").open("w") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [
                *(str(binary), command, "--port", str(port), "--embedded", "off"),
                *("--data-dir", str(tmp / "data"), "--no-mdns"),
            ],
            stdout=log,
            stderr=log,
            text=True,
            env={**os.environ, "QUORUM_AUTODETECT__ENABLED": "false", **env},
        )


def test_the_built_app_serves_healthz_and_stops_on_sigterm(built_app: Path, tmp_path: Path) -> None:
    port = closed_port()
    node = start(built_app, "up", port, tmp_path)
    try:
        wait_until(
            "/healthz from the built app",
            lambda: get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200 or None,
            START_TIMEOUT_S,
        )
        status, body = get_json(f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, {"status": "ok", "node": body["node"]})  # type: ignore[index]
        assert get_json(f"http://127.0.0.1:{port}/v1/models")[0] == 200
        node.send_signal(signal.SIGTERM)
        assert node.wait(START_TIMEOUT_S) == 0
    finally:
        stop_process(node)
    assert "Traceback" not in (tmp_path / "up.log").read_text()


def test_the_built_app_has_the_tray(built_app: Path, tmp_path: Path) -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs the Debian packages: {' '.join(missing)}")
    port = closed_port()
    with XTray(tmp_path) as desktop:
        tray = start(built_app, "tray", port, tmp_path, DISPLAY=desktop.display)
        try:
            icon = wait_until(
                "the built app's icon in the tray",
                lambda: desktop.docked_icon("quorumSystemTrayIcon"),
                START_TIMEOUT_S,
            )
            wait_until(
                "the node behind the icon",
                lambda: "0 models here" in desktop.title(icon) or None,
                START_TIMEOUT_S,
            )
            assert get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200
            tray.send_signal(signal.SIGTERM)
            assert tray.wait(START_TIMEOUT_S) == 0
        finally:
            stop_process(tray)
    log = (tmp_path / "tray.log").read_text()
    assert "Traceback" not in log and "tray stopped" in log
