from __future__ import annotations

from pathlib import Path

from quorum.config.reference import render

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_current() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: python -m quorum.config.reference > docs/configuration.md"
    )


def test_every_key_is_documented() -> None:
    text = render()
    for key in (
        "node.port",
        "cluster.token",
        "relay.url",
        "autodetect.targets",
        "embedded.mode",
        "services[].features",
        "services[].type",
        "log_level",
    ):
        assert f"`{key}`" in text
