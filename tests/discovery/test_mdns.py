"""Discovery without a network: what happens before any socket opens."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from quorum.discovery import (
    PROTOCOL_VERSION,
    Advert,
    Discovery,
    DiscoveryError,
    DiscoveryEvent,
    NoInterface,
    PeerRemoved,
    cluster_discriminator,
    models_digest,
)

ADVERT = Advert(
    version=PROTOCOL_VERSION,
    node_id="n1",
    node_name="n1",
    port=32768,
    cluster=cluster_discriminator("t"),
    identity="0123456789abcdef",
    models_digest=models_digest([]),
)


async def test_no_matching_interface_fails_start_and_leaves_nothing_running() -> None:
    events: list[DiscoveryEvent] = []
    discovery = Discovery(ADVERT, events.append, interfaces=["no-such-interface0"])
    before = asyncio.all_tasks()
    with pytest.raises(NoInterface, match="no-such-interface0"):
        await discovery.start()
    assert not discovery.advertising and discovery.service_name is None
    assert asyncio.all_tasks() == before
    await discovery.close()  # idempotent
    with pytest.raises(DiscoveryError):
        await discovery.start()  # closed for good
    assert events == []


async def test_update_pause_and_resume_before_start_only_remember() -> None:
    discovery = Discovery(ADVERT, lambda event: None)
    newer = dataclasses.replace(ADVERT, models_digest="0" * 16)
    await discovery.update(newer)
    await discovery.pause()
    await discovery.resume()
    assert discovery.advert == newer and not discovery.advertising
    await discovery.close()


def test_events_are_frozen_values() -> None:
    event = PeerRemoved("n2", "b (n2)._quorum._tcp.local.")
    assert event == PeerRemoved("n2", "b (n2)._quorum._tcp.local.")
    with pytest.raises(AttributeError):
        event.node_id = "x"  # type: ignore[misc]
