"""The tray's state and menu as pure functions of the node's status JSON.

Rules of this module (everything the tray shows is decided here):

- Input is what ``GET /quorum/v1/status`` answers (:func:`quorum.server.status.status_json`),
  or ``None`` while the node has not answered yet, plus the few facts only the tray
  knows: whether sharing is paused, whether start-at-login is on, and the error that
  stopped the node, if any.
- Output is a frozen :class:`TrayView`: the :class:`TrayState` the icon draws, a
  one-line title (tooltip), and the menu as a tuple of :class:`Item` values. Items
  name an :class:`Action`; the adapter (:mod:`quorum.tray.ui`) maps actions to code.
- The state is chosen in this order: error, paused, starting, relay unreachable,
  serving with peers, serving alone. The first that holds wins.
- Missing or malformed keys never raise: a status from an older or newer node
  degrades to fewer details, not to a crash of the tray.

Same inputs, same output; nothing here touches a display, a socket or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_MODELS_SHOWN = 12
APP_NAME = "Quorum"


class TrayState(enum.StrEnum):
    """What the icon shows at a glance."""

    SERVING_PEERS = "serving-peers"  # up, and at least one peer online
    SERVING_ALONE = "serving-alone"  # up, no peer online
    RELAY_UNREACHABLE = "relay-unreachable"  # a relay is configured but not connected
    PAUSED = "paused"  # sharing paused: no advert, peers refused
    STARTING = "starting"  # the node has not reported ready yet
    ERROR = "error"  # the node failed or stopped answering


class Action(enum.StrEnum):
    """What a menu item does when chosen; ``NONE`` for informational lines."""

    NONE = "none"
    OPEN_DASHBOARD = "open-dashboard"
    COPY_API_URL = "copy-api-url"
    TOGGLE_PAUSE = "toggle-pause"
    TOGGLE_AUTOSTART = "toggle-autostart"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class Item:
    """One menu line. ``checked`` is None for items that are not toggles."""

    text: str
    action: Action = Action.NONE
    enabled: bool = True
    checked: bool | None = None
    default: bool = False  # what a plain click on the icon does

    @property
    def separator(self) -> bool:
        return self.text == "-"


SEPARATOR = Item("-", enabled=False)


@dataclass(frozen=True, slots=True)
class Summary:
    """The facts of a status JSON the tray uses, read defensively."""

    node_name: str
    ready: bool
    api_url: str | None
    dashboard_url: str | None
    local_models: tuple[str, ...]
    peers_online: int
    peers_known: int
    relay_url: str | None
    relay_connected: bool
    relay_peers: int  # peers reached through the relay (they may also be LAN peers)
    relay_error: str | None


@dataclass(frozen=True, slots=True)
class TrayView:
    """Everything the adapter shows: the icon's state, its title and the menu."""

    state: TrayState
    title: str
    status_line: str
    items: tuple[Item, ...]
    api_url: str | None
    dashboard_url: str | None

    def item(self, action: Action) -> Item:
        """The first item with ``action``; KeyError if the menu has none."""
        for item in self.items:
            if item.action is action:
                return item
        raise KeyError(action)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def summarize(status: Mapping[str, Any]) -> Summary:
    """Pick the tray's facts out of a status JSON; absent keys become empty values."""
    node = _mapping(status.get("node"))
    api_url = node.get("url") if isinstance(node.get("url"), str) else None
    dashboard = api_url.removesuffix("/").removesuffix("/v1") + "/" if api_url else None
    models: dict[str, None] = {}
    for service in _list(status.get("services")):
        service = _mapping(service)
        if service.get("up") is not True:
            continue
        for model in _list(service.get("models")):
            model_id = _mapping(model).get("id")
            if isinstance(model_id, str) and model_id:
                models.setdefault(model_id, None)
    peers = [_mapping(p) for p in _list(status.get("peers"))]
    relay = _mapping(status.get("relay"))
    relay_url = relay.get("url") if isinstance(relay.get("url"), str) and relay["url"] else None
    relay_peers, relay_error = relay.get("peers"), relay.get("last_error")
    return Summary(
        node_name=str(node.get("name") or ""),
        ready=node.get("ready") is not False,
        api_url=api_url,
        dashboard_url=dashboard,
        local_models=tuple(sorted(models)),
        peers_online=sum(1 for p in peers if p.get("online") is True),
        peers_known=len(peers),
        relay_url=relay_url,
        relay_connected=relay.get("connected") is True,
        relay_peers=relay_peers if isinstance(relay_peers, int) and relay_peers > 0 else 0,
        relay_error=relay_error if isinstance(relay_error, str) and relay_error else None,
    )


def tray_state(summary: Summary | None, *, paused: bool, error: str | None) -> TrayState:
    """The icon's state; the order of the rules is the module docstring's."""
    if error is not None or summary is None:
        return TrayState.ERROR if error is not None else TrayState.STARTING
    if paused:
        return TrayState.PAUSED
    if not summary.ready:
        return TrayState.STARTING
    if summary.relay_url and not summary.relay_connected:
        return TrayState.RELAY_UNREACHABLE
    if summary.peers_online or summary.relay_peers:
        return TrayState.SERVING_PEERS
    return TrayState.SERVING_ALONE


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def status_line(summary: Summary | None, state: TrayState, error: str | None) -> str:
    """One line: models here, peers, relay (or what is wrong)."""
    if state is TrayState.ERROR:
        return f"Stopped: {error}" if error else "Stopped"
    if summary is None or state is TrayState.STARTING:
        return "Starting..."
    parts = [
        _count(len(summary.local_models), "model") + " here",
        _count(summary.peers_online, "peer") + (" on the LAN" if summary.relay_url else ""),
    ]
    if summary.relay_url is None:
        parts.append("no relay")
    elif summary.relay_connected:
        parts.append(f"relay connected ({_count(summary.relay_peers, 'peer')})")
    else:
        parts.append("relay unreachable")
    line = " · ".join(parts)
    return f"Paused · {line}" if state is TrayState.PAUSED else line


def build_view(
    status: Mapping[str, Any] | None,
    *,
    paused: bool = False,
    autostart: bool = False,
    error: str | None = None,
) -> TrayView:
    """The whole tray for one status JSON (None: not answered yet)."""
    summary = summarize(status) if status is not None else None
    state = tray_state(summary, paused=paused, error=error)
    line = status_line(summary, state, error)
    name = summary.node_name if summary and summary.node_name else None
    title = f"{APP_NAME} ({name}): {line}" if name else f"{APP_NAME}: {line}"
    serving = summary is not None and error is None

    items: list[Item] = [Item(line, enabled=False)]
    if summary is not None and summary.relay_error and not summary.relay_connected:
        items.append(Item(f"Relay: {summary.relay_error}", enabled=False))
    items.append(SEPARATOR)
    head = len(items)
    models = summary.local_models if summary else ()
    if models:
        items.append(Item("Shared from this machine:", enabled=False))
        items.extend(Item(f"   {m}", enabled=False) for m in models[:MAX_MODELS_SHOWN])
        if len(models) > MAX_MODELS_SHOWN:
            more = len(models) - MAX_MODELS_SHOWN
            items.append(Item(f"   ... and {more} more", enabled=False))
    elif serving:
        items.append(Item("No models on this machine", enabled=False))
    if len(items) > head:
        items.append(SEPARATOR)
    has_urls = serving and summary is not None and summary.api_url is not None
    items += [
        Item("Open dashboard", Action.OPEN_DASHBOARD, enabled=has_urls, default=True),
        Item("Copy API URL", Action.COPY_API_URL, enabled=has_urls),
        SEPARATOR,
        Item("Pause sharing", Action.TOGGLE_PAUSE, enabled=serving, checked=paused),
        Item("Start at login", Action.TOGGLE_AUTOSTART, checked=autostart),
        SEPARATOR,
        Item("Quit Quorum", Action.QUIT),
    ]
    return TrayView(
        state=state,
        title=title,
        status_line=line,
        items=tuple(items),
        api_url=summary.api_url if summary else None,
        dashboard_url=summary.dashboard_url if summary else None,
    )
