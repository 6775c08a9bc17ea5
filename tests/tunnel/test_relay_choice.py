"""Which relay a node dials next, and the config that lists them (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quorum.config.models import RelaySection
from quorum.tunnel.relays import RelayChoice, relay_list


def test_a_node_moves_through_its_relays_in_turn_after_each_loss() -> None:
    choice = RelayChoice(relay_list("ws://a/tunnel", ["ws://b/tunnel", "ws://a/tunnel", "ws://c"]))
    assert choice.urls == ("ws://a/tunnel", "ws://b/tunnel", "ws://c")
    seen = []
    for _ in range(4):
        seen.append(choice.current)
        choice = choice.moved_on()
    assert seen == ["ws://a/tunnel", "ws://b/tunnel", "ws://c", "ws://a/tunnel"]
    alone = RelayChoice(relay_list("ws://a/tunnel"))
    assert alone.moved_on().current == "ws://a/tunnel"
    with pytest.raises(ValueError):
        RelayChoice(())


def test_more_relays_come_after_the_first_one() -> None:
    section = RelaySection(url="wss://r1/tunnel", urls=("wss://r2/tunnel", "wss://r3/tunnel"))
    assert section.urls == ("wss://r2/tunnel", "wss://r3/tunnel")
    with pytest.raises(ValidationError, match=r"set relay\.url too"):
        RelaySection(urls=("wss://r2/tunnel",))
    with pytest.raises(ValidationError):
        RelaySection(url="wss://r1/tunnel", urls=("https://r2/tunnel",))
