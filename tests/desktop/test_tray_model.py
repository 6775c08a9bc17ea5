"""The tray's menu and state as pure functions of the status JSON: no display needed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorum.tray.model import (
    MAX_MODELS_SHOWN,
    Action,
    Item,
    TrayState,
    build_view,
    summarize,
)
from tests.desktop.status_samples import PEER_B, status, two_peers


def texts(items: tuple[Item, ...]) -> list[str]:
    return [i.text for i in items]


def test_a_node_with_two_peers_has_the_whole_menu_in_order() -> None:
    view = build_view(two_peers(), autostart=True)
    assert view.state is TrayState.SERVING_PEERS
    assert texts(view.items) == [
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
    assert view.title == "Quorum (studio): 2 models here · 2 peers · no relay"
    # Information lines are not clickable; actions are.
    assert not any(i.enabled for i in view.items if i.action is Action.NONE)
    assert all(i.enabled for i in view.items if i.action is not Action.NONE)
    assert view.item(Action.OPEN_DASHBOARD).default
    assert view.item(Action.TOGGLE_PAUSE).checked is False
    assert view.item(Action.TOGGLE_AUTOSTART).checked is True
    assert view.api_url == "http://127.0.0.1:32768/v1"
    assert view.dashboard_url == "http://127.0.0.1:32768/"


def test_only_up_services_count_as_shared_models() -> None:
    summary = summarize(two_peers())
    assert summary.local_models == ("llama3.2:1b", "qwen3:0.6b")  # vllm is down
    assert summary.peers_online == 2 and summary.peers_known == 2


@pytest.mark.parametrize(
    ("over", "kwargs", "state", "line"),
    [
        ({}, {}, TrayState.SERVING_ALONE, "2 models here · 0 peers · no relay"),
        ({"peers": [PEER_B]}, {}, TrayState.SERVING_PEERS, "2 models here · 1 peer · no relay"),
        (
            {"peers": [{**PEER_B, "online": False}]},
            {},
            TrayState.SERVING_ALONE,
            "2 models here · 0 peers · no relay",
        ),
        (
            {"relay": {"url": "wss://r.example/tunnel", "connected": False}},
            {},
            TrayState.RELAY_UNREACHABLE,
            "2 models here · 0 peers on the LAN · relay unreachable",
        ),
        (
            {"relay": {"url": "wss://r.example/tunnel", "connected": True, "peers": 3}},
            {},
            TrayState.SERVING_PEERS,
            "2 models here · 0 peers on the LAN · relay connected (3 peers)",
        ),
        (
            {"peers": [PEER_B]},
            {"paused": True},
            TrayState.PAUSED,
            "Paused · 2 models here · 1 peer · no relay",
        ),
        ({}, {"error": "port 32768 is in use"}, TrayState.ERROR, "Stopped: port 32768 is in use"),
    ],
)
def test_state_and_status_line(
    over: dict[str, Any], kwargs: dict[str, Any], state: TrayState, line: str
) -> None:
    view = build_view(status(**over), **kwargs)
    assert (view.state, view.status_line) == (state, line)
    assert view.items[0] == Item(line, enabled=False)


def test_relay_error_is_shown_while_unreachable() -> None:
    relay = {"url": "wss://r.example/tunnel", "connected": False, "last_error": "HTTP 401"}
    view = build_view(status(relay=relay))
    assert texts(view.items)[:2] == [
        "2 models here · 0 peers on the LAN · relay unreachable",
        "Relay: HTTP 401",
    ]


def test_pause_is_checked_while_paused() -> None:
    view = build_view(two_peers(), paused=True)
    assert view.item(Action.TOGGLE_PAUSE).checked is True
    assert view.item(Action.TOGGLE_PAUSE).enabled


def test_before_the_first_status_the_tray_is_starting() -> None:
    view = build_view(None)
    assert view.state is TrayState.STARTING
    assert view.title == "Quorum: Starting..."
    assert not view.item(Action.OPEN_DASHBOARD).enabled
    assert not view.item(Action.TOGGLE_PAUSE).enabled
    assert view.item(Action.QUIT).enabled and view.item(Action.TOGGLE_AUTOSTART).enabled


def test_a_node_not_ready_yet_is_starting() -> None:
    doc = status()
    doc["node"]["ready"] = False
    assert build_view(doc).state is TrayState.STARTING


def test_a_failed_node_still_offers_quit_and_autostart_only() -> None:
    view = build_view(None, error="port 32768 is in use")
    enabled = {i.action for i in view.items if i.enabled}
    assert enabled == {Action.TOGGLE_AUTOSTART, Action.QUIT}
    assert view.state is TrayState.ERROR


def test_long_model_lists_are_cut() -> None:
    models = [{"id": f"m{i:02}", "type": "llm", "loaded": None} for i in range(20)]
    doc = status()
    doc["services"][0]["models"] = models
    lines = texts(build_view(doc).items)
    assert lines.count("   ... and 8 more") == 1
    assert sum(1 for t in lines if t.startswith("   m")) == MAX_MODELS_SHOWN


def test_no_models_says_so() -> None:
    doc = status(services=[])
    assert "No models on this machine" in texts(build_view(doc).items)


def test_views_are_frozen_values() -> None:
    view = build_view(two_peers())
    assert view == build_view(two_peers())
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.state = TrayState.ERROR  # type: ignore[misc]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["node", "relay", "services", "peers", "models", "x"]), json_values
    ),
    st.booleans(),
    st.booleans(),
)
def test_any_json_gives_a_menu_never_an_exception(
    doc: dict[str, Any], paused: bool, autostart: bool
) -> None:
    view = build_view(doc, paused=paused, autostart=autostart)
    assert view.items[-1].action is Action.QUIT
    assert view.state in TrayState
