"""``quorum tray``: the pystray adapter that shows :mod:`quorum.tray.model`'s view.

Threads, and who owns what:

- the **main thread** runs pystray's loop (:meth:`TrayApp.run`), as macOS requires;
- the **node thread** (:class:`~quorum.tray.runner.NodeThread`) runs the node and
  reports its status; it never touches pystray, so a slow GUI never stalls requests;
- the **UI thread** (``quorum-tray-ui``) applies the latest view to the icon: image,
  title and menu. pystray's X11 backend runs such changes on its loop and waits for
  them, so they are made off the node thread and never after the loop has stopped;
- menu actions that may block (browser, clipboard, pausing the node) run on one
  **action thread**, so the menu stays responsive.

Quit (the menu, SIGINT or SIGTERM) stops the UI thread, then pystray's loop; then
:meth:`TrayApp.run` stops the node (goodbyes sent, port closed) and returns 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, ModuleType
from typing import Any

from quorum import autostart
from quorum.config.models import Config
from quorum.errors import QuorumError
from quorum.tray import desktop
from quorum.tray.icon import draw_icon
from quorum.tray.model import Action, TrayState, TrayView, build_view
from quorum.tray.runner import REPORT_INTERVAL_S, NodeReport, NodeThread

log = logging.getLogger("quorum.tray")

ICON_NAME = "quorum"
ACTION_TIMEOUT_S = 30.0
NUDGE_AFTER_S = 1.0
DOCK_RETRY_S = 2.0
XEMBED_BACKGROUND = (48, 48, 48)  # a dark panel's grey, for trays without transparency


def import_pystray() -> ModuleType:
    """pystray, imported late: it connects to the display as it is imported."""
    try:
        import pystray
    except ImportError as exc:
        raise QuorumError("the tray needs pystray and Pillow: pip install 'quorum[tray]'") from exc
    except Exception as exc:  # Xlib raises its own errors when there is no display
        raise QuorumError(
            f"no desktop to show a tray icon on ({type(exc).__name__}: {exc}); "
            "run 'quorum up' instead, or set DISPLAY"
        ) from None
    module: ModuleType = pystray
    return module


def pystray_menu(pystray: ModuleType, view: TrayView, on_action: Callable[[Action], None]) -> Any:
    """The view's items as a ``pystray.Menu``."""
    items = []
    for item in view.items:
        if item.separator:
            items.append(pystray.Menu.SEPARATOR)
            continue
        checked = None if item.checked is None else _constant(item.checked)
        items.append(
            pystray.MenuItem(
                item.text,
                _action(on_action, item.action),
                checked=checked,
                enabled=item.enabled,
                default=item.default,
            )
        )
    return pystray.Menu(*items)


def _is_xorg(pystray: ModuleType) -> bool:
    return str(getattr(pystray.Icon, "__module__", "")).endswith("_xorg")


def icon_title(pystray: ModuleType, title: str) -> str:
    """``title`` as the backend can show it: X11's WM_NAME is Latin-1 only."""
    if _is_xorg(pystray):
        return title.encode("latin-1", "replace").decode("latin-1")
    return title


def icon_image(pystray: ModuleType, state: TrayState) -> Any:
    """The icon for ``state``; opaque on X11, whose XEmbed icons show no transparency."""
    return draw_icon(state, background=XEMBED_BACKGROUND if _is_xorg(pystray) else None)


def _constant(value: bool) -> Callable[[Any], bool]:
    return lambda _item: value


def _action(on_action: Callable[[Action], None], action: Action) -> Callable[[Any, Any], None]:
    def chosen(_icon: Any, _item: Any) -> None:
        on_action(action)

    return chosen


def _nudge(icon: Any) -> None:
    """Wake pystray's X11 loop if python-xlib left it asleep.

    With the X11 backend, a change made from another thread is sent to the loop as an
    X event and the caller waits for the loop to make it; ``stop()`` destroys the
    window and waits for the DestroyNotify. python-xlib may read such an event on the
    other thread, and the loop then sleeps on a socket with nothing more to come. One
    round trip to the X server (a reply for the loop's thread to read) wakes it to
    find the event. The same holds for a new title or icon set from the node's thread.
    Other backends have no ``_display`` and need nothing.
    """
    display = getattr(icon, "_display", None)
    sync = getattr(display, "sync", None)
    if callable(sync):
        log.debug("waking the X11 loop")
        with contextlib.suppress(Exception):
            sync()


class _QuietDocking(logging.Filter):
    """pystray logs a traceback each time the icon finds no tray; say it once, plainly."""

    def __init__(self) -> None:
        super().__init__()
        self._said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        if not self._said:
            self._said = True
            log.warning("no system tray to show the icon in yet; it appears when one starts")
        return False


def _undocked(icon: Any) -> bool:
    """True while pystray's X11 backend has found no system tray to dock in.

    It looks for one only when the icon is shown or changed, so an app started at
    login before the desktop's panel would stay invisible; the UI thread retries.
    """
    return icon is not None and getattr(icon, "_systray_manager", False) is None


class TrayApp:
    """The tray icon and its node. ``run()`` on the main thread; ``quit()`` from anywhere."""

    def __init__(
        self,
        config: Config,
        *,
        pystray: ModuleType | None = None,
        copy_text: Callable[[str], bool] = desktop.copy_text,
        open_url: Callable[[str], bool] = desktop.open_url,
        autostart_command: Sequence[str] | None = None,
        report_interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        self._pystray = pystray
        self._copy_text = copy_text
        self._open_url = open_url
        self._autostart_command = autostart_command
        self._node = NodeThread(config, self._on_report, interval_s=report_interval_s)
        self._lock = threading.Lock()  # guards the fields below
        self._report = NodeReport(None, None, False)
        self._autostart = autostart.is_enabled()
        self._view = build_view(None, autostart=self._autostart)
        self._shown: TrayView | None = None
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._icon: Any = None
        self._running = threading.Event()  # pystray's loop has started
        self._loop_done = threading.Event()  # and has ended
        self._ui_thread: threading.Thread | None = None
        self._quit_thread: threading.Thread | None = None
        self._actions = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="quorum-tray-action"
        )

    @property
    def view(self) -> TrayView:
        """The view last computed (what the icon shows, or is about to)."""
        with self._lock:
            return self._view

    @property
    def icon(self) -> Any:
        """The ``pystray.Icon`` while :meth:`run` runs, else None."""
        return self._icon

    def run(self) -> int:
        """Show the icon and run the node until Quit; returns the exit code (0)."""
        pystray = self._pystray or import_pystray()
        self._pystray = pystray
        view = self.view
        self._icon = pystray.Icon(
            ICON_NAME,
            icon=icon_image(pystray, view.state),
            title=icon_title(pystray, view.title),
            menu=pystray_menu(pystray, view, self.choose),
        )
        self._shown = view
        log.info("tray starting (pystray backend %s)", type(self._icon).__module__)
        quiet = _QuietDocking()
        pystray_log = logging.getLogger("pystray._base")
        pystray_log.addFilter(quiet)
        try:
            with self._signals():
                self._icon.run(setup=self._setup)
        finally:
            self._loop_done.set()
            self._shutdown()
            pystray_log.removeFilter(quiet)
        log.info("tray stopped")
        return 0

    def wait_running(self, timeout_s: float) -> bool:
        """Block until the icon's loop runs (True), or ``timeout_s`` passes (False)."""
        return self._running.wait(timeout_s)

    def quit(self) -> None:
        """Stop the icon's loop (then :meth:`run` stops the node). Idempotent, any thread."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
            # Not on this thread: on X11 this may be pystray's own loop, which must stay
            # free to finish an update the UI thread is waiting on.
            self._quit_thread = threading.Thread(
                target=self._stop_icon, name="quorum-tray-quit", daemon=True
            )
            self._quit_thread.start()

    def choose(self, action: Action) -> None:
        """Do what a menu item asks (called by pystray, on its thread)."""
        if action is Action.QUIT:
            self.quit()
        elif action is not Action.NONE:
            with contextlib.suppress(RuntimeError):  # shutting down
                self._actions.submit(self._do, action)

    # -- threads ----------------------------------------------------------------

    def _setup(self, icon: Any) -> None:
        """pystray's setup callback, on its setup thread, once the loop runs."""
        self._node.start()
        self._nudged(lambda: setattr(icon, "visible", True))
        self._running.set()
        self._ui_thread = threading.Thread(target=self._ui_loop, name="quorum-tray-ui")
        self._ui_thread.start()

    def _nudged(self, change: Callable[[], None]) -> None:
        """Make a change to the icon, waking pystray's X11 loop while it waits (see _nudge)."""
        done = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                change()
            except Exception as exc:
                failure.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=work, name="quorum-tray-change", daemon=True)
        worker.start()
        while not done.wait(NUDGE_AFTER_S):
            if self._loop_done.is_set():
                return  # the loop is gone: the change can no longer be made
            _nudge(self._icon)
        worker.join()
        if failure:
            raise failure[0]

    def _stop_icon(self) -> None:
        # pystray cannot stop a loop that has not started: a quit that early waits for it.
        self._running.wait(ACTION_TIMEOUT_S)
        ui = self._ui_thread
        if ui is not None:
            ui.join()
        icon = self._icon
        if icon is None:
            return
        icon.stop()
        if not self._loop_done.wait(NUDGE_AFTER_S):
            _nudge(icon)

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        self._actions.shutdown(wait=True, cancel_futures=True)
        self._node.stop()
        for thread in (self._ui_thread, self._quit_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        self._icon = None

    def _on_report(self, report: NodeReport) -> None:
        """The node thread's callback: remember, recompute, wake the UI thread."""
        with self._lock:
            self._report = report
            self._recompute()

    def _recompute(self) -> None:
        """With the lock held: a new view from the latest facts; wakes the UI thread."""
        report = self._report
        view = build_view(
            report.status, paused=report.paused, autostart=self._autostart, error=report.error
        )
        if view != self._view:
            self._view = view
            self._changed.notify_all()

    def _ui_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing and self._view == self._shown:
                    if not self._changed.wait(DOCK_RETRY_S) and _undocked(self._icon):
                        break
                if self._closing:
                    return
                view = self._view
            try:
                if view == self._shown:
                    self._nudged(self._redock)
                else:
                    self._nudged(lambda: self._show(view))  # noqa: B023 - runs before the next loop
            except Exception:
                log.exception("could not update the tray icon")
            self._shown = view

    def _redock(self) -> None:
        """Show the icon again: on X11 this docks it in a tray that appeared after us."""
        icon, shown = self._icon, self._shown
        if icon is not None and shown is not None and self._pystray is not None:
            log.debug("no system tray yet: trying to dock again")
            icon.icon = icon_image(self._pystray, shown.state)

    def _show(self, view: TrayView) -> None:
        icon, shown = self._icon, self._shown
        if icon is None or self._pystray is None:
            return
        if shown is None or view.state is not shown.state:
            icon.icon = icon_image(self._pystray, view.state)
        icon.title = icon_title(self._pystray, view.title)
        if shown is None or view.items != shown.items:
            icon.menu = pystray_menu(self._pystray, view, self.choose)
        _nudge(icon)  # a change made from this thread must not wait for the next X event
        log.debug("tray shows %s: %s", view.state.value, view.status_line)

    # -- actions --------------------------------------------------------------------

    def _do(self, action: Action) -> None:
        view = self.view
        try:
            if action is Action.OPEN_DASHBOARD and view.dashboard_url:
                self._open_url(view.dashboard_url)
            elif action is Action.COPY_API_URL and view.api_url:
                self._copy_text(view.api_url)
            elif action is Action.TOGGLE_PAUSE:
                with self._lock:
                    paused = self._report.paused
                self._node.set_paused(not paused).result(ACTION_TIMEOUT_S)
            elif action is Action.TOGGLE_AUTOSTART:
                self._toggle_autostart()
        except (QuorumError, TimeoutError, concurrent.futures.TimeoutError) as exc:
            log.error("%s failed: %s", action.value, exc)
        except Exception:
            log.exception("%s failed", action.value)

    def _toggle_autostart(self) -> None:
        if autostart.is_enabled():
            autostart.disable()
        else:
            autostart.enable(self._autostart_command)
        with self._lock:
            self._autostart = autostart.is_enabled()
            self._recompute()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM quit, as Quit does (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: quitting", signal.Signals(signum).name)
            # Not here: the handler interrupts the main thread, which may hold our lock.
            threading.Thread(target=self.quit, name="quorum-tray-signal").start()

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, previous in old.items():
                signal.signal(sig, previous)
