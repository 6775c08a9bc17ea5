"""``quorum tray`` under test control: ``python3 -m tests.desktop.tray_driver``.

Runs :class:`quorum.tray.ui.TrayApp` exactly as ``quorum tray`` does (pystray
on the main thread, the node on its worker thread), in front of a fake Ollama,
and lets the test use the menu through pystray's own menu objects, as the
backend does when a person clicks. Commands on stdin, one a line:

- ``menu``: print the menu pystray holds now (text, enabled, checked, default);
- ``click TEXT``: activate the menu item whose text is TEXT;
- ``quit`` or end of input: Quit, as the menu does.

Prints JSON lines on stdout: ``menu``, ``clicked``, and last ``exited`` with the
exit code and any thread still alive. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from quorum.config.load import validate
from quorum.tray.ui import TrayApp
from tests.fakes import FakeOllama, LoopThread

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    with _print_lock:
        print(json.dumps({"event": event, **fields}), flush=True)


def menu_json(app: TrayApp) -> list[dict[str, Any]]:
    icon = app.icon
    assert icon is not None
    out: list[dict[str, Any]] = []
    for item in icon.menu:  # pystray's visible items, separators folded as it shows them
        if item is type(icon.menu).SEPARATOR:
            out.append({"text": "-"})
            continue
        out.append(
            {
                "text": item.text,
                "enabled": item.enabled,
                "checked": item.checked,
                "default": item.default,
            }
        )
    return out


def commands(app: TrayApp) -> None:
    if not app.wait_running(60):
        emit("error", message="the tray did not start")
        return
    for line in sys.stdin:
        verb, _, arg = line.strip().partition(" ")
        if verb == "menu":
            emit("menu", items=menu_json(app), title=app.icon.title, state=app.view.state.value)
        elif verb == "click":
            icon = app.icon
            matches = [item for item in icon.menu if item.text == arg]
            if matches:
                matches[0](icon)  # what the backend calls when the item is chosen
            emit("clicked", text=arg, found=bool(matches))
        elif verb == "quit":
            break
    app.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--models", default="qwen3:0.6b,llama3.2:1b")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # a stuck run can be asked where it is
    logging.basicConfig(
        level=logging.DEBUG,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("zeroconf", "PIL", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.INFO)

    with LoopThread("fake-ollama") as bg:
        ollama = FakeOllama(models=args.models.split(","))
        url = bg.run(ollama.start())
        config = validate(
            {
                "node": {"name": args.name, "port": 32768, "data_dir": args.data_dir},
                "cluster": {"token": args.token},
                "services": [{"name": "ollama", "engine": "ollama", "url": url}],
                "autodetect": {"enabled": False},
                "embedded": {"mode": "off"},
            }
        )
        app = TrayApp(
            config,
            report_interval_s=0.25,
            autostart_command=(str(Path(sys.executable)), "-m", "quorum.cli", "tray"),
        )
        threading.Thread(target=commands, args=(app,), name="driver-stdin", daemon=True).start()
        code = app.run()
        bg.run(ollama.stop())
    left = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    emit("exited", code=code, threads=left)
    return code


if __name__ == "__main__":
    sys.exit(main())
