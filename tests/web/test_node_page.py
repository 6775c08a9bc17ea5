"""The node's page at ``/`` in a real Chromium, against a real node with fake engines.

Screenshots go to ``docs/`` (or ``$QUORUM_SCREENSHOT_DIR``), linked from the README.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import MakeRig
from tests.fakes import FakeOllama, closed_port_url
from tests.harness import timeout
from tests.web.conftest import OpenPage
from tests.web.studio import (
    GONE_PEER,
    LAN_MODEL,
    LAN_PEER,
    LONG_MODEL,
    RELAY_MODEL,
    RELAY_PEER,
    TOKEN,
    studio,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("QUORUM_SCREENSHOT_DIR") or ROOT / "docs")
PHONE = {"width": 390, "height": 844}


def wait(seconds: float) -> float:
    """A playwright timeout (ms), scaled like every other timeout of the suite."""
    return timeout(seconds) * 1000


def shoot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / name, full_page=full_page, animations="disabled")


def row(page: Page, table: str, text: str) -> str:
    """The text of the one row of ``table`` that contains ``text``."""
    found = page.locator(f"#{table} tbody tr", has_text=text)
    expect(found).to_have_count(1, timeout=wait(5))
    return found.inner_text()


def test_page_shows_this_node_its_engines_models_and_endpoint(
    make_rig: MakeRig, open_page: OpenPage
) -> None:
    rig = studio(make_rig)
    page = open_page(rig.node.url + "/", permissions=["clipboard-read", "clipboard-write"])
    expect(page.locator("h1")).to_have_text("studio", timeout=wait(5))
    expect(page).to_have_title("studio · Quorum")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#endpoint")).to_have_text(rig.base_url)

    assert re.search(r"ollama\s+ollama\s+llm", row(page, "services", "qwen3:0.6b"))
    assert "Qwen/Qwen3-30B-A3B" in row(page, "services", "vllm-qwen")
    assert "whisper-1" in row(page, "services", "asr")
    for model in ("llama3.2:1b", "qwen3:0.6b", LONG_MODEL, "Qwen/Qwen3-30B-A3B", "whisper-1"):
        assert "studio" in row(page, "models", model)
    assert "stt" in row(page, "models", "whisper-1")
    expect(page.locator("#cluster")).to_contain_text("joined")
    expect(page.locator("#relay")).to_have_text("none configured")

    shoot(page, "node-page.png")

    page.locator("#copy").click()
    expect(page.locator("#copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == rig.base_url


def test_peers_show_how_each_is_reached_and_how_fresh(
    make_rig: MakeRig, open_page: OpenPage
) -> None:
    rig = studio(make_rig, traffic=False, routing={"cooldown_failures": 1, "cooldown_s": 60})
    page = open_page(rig.node.url + "/")
    expect(page.locator("#cooling-section")).to_be_hidden()
    lan = row(page, "peers", LAN_PEER)
    # Route badges are styled in capitals; inner_text reads them as shown.
    assert "LAN" in lan and "192.168.1.23:32768" in lan and "online" in lan
    assert re.search(r"\d+ s ago", lan), lan
    relay = row(page, "peers", RELAY_PEER)
    assert "RELAY" in relay and "through the relay" in relay and "online" in relay
    gone = row(page, "peers", GONE_PEER)
    assert "offline" in gone and "12 min ago" in gone
    expect(page.locator("#peer-count")).to_have_text("2 online of 3")
    assert "laptop LAN" in row(page, "models", LAN_MODEL)
    assert "gpu-box RELAY" in row(page, "models", RELAY_MODEL)

    # The LAN peer's engine refuses (a closed loopback port): it cools down, visibly.
    with contextlib.suppress(openai.APIStatusError):
        rig.client().chat.completions.create(
            model=LAN_MODEL, messages=[{"role": "user", "content": "anyone?"}]
        )
    expect(page.locator("#cooling-section")).to_be_visible(timeout=wait(5))
    assert re.search(r"laptop / ollama\s+LAN\s+open\s+1\s+\d", row(page, "cooling", LAN_PEER))
    assert re.search(r"50[23]", row(page, "recent", LAN_MODEL))


def test_a_request_appears_in_recent_requests_without_a_reload(
    make_rig: MakeRig, open_page: OpenPage
) -> None:
    rig = studio(make_rig, traffic=False)
    page = open_page(rig.node.url + "/")
    expect(page.locator("#recent tbody tr")).to_have_text([re.compile(r"^No request yet")])
    page.evaluate("window.sameDocument = true")
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))

    rig.client().chat.completions.create(
        model="qwen3:0.6b", messages=[{"role": "user", "content": "seen live?"}]
    )

    first = page.locator("#recent tbody tr").first
    expect(first).to_contain_text("qwen3:0.6b", timeout=wait(5))
    text = first.inner_text()
    assert re.search(r"chat\s+qwen3:0\.6b\s+LOCAL\s+studio\s+200", text), text
    assert re.search(r"[\d.]+ ms\s+[\d.]+ ms", text), text
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    assert fetched == [], f"the update came by polling, not the event stream: {fetched}"


def test_phone_sized_screen_has_no_horizontal_scroll(
    make_rig: MakeRig, open_page: OpenPage
) -> None:
    rig = studio(make_rig)
    page = open_page(
        rig.node.url + "/", viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    expect(page.locator("#services")).to_contain_text(LONG_MODEL, timeout=wait(5))
    expect(page.locator("#recent")).to_contain_text("llama-9000")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide on a {widths[1]} px screen"
    # Table rows turn into labelled blocks: the column names stay readable.
    expect(page.locator("#recent thead")).to_be_hidden()
    shoot(page, "node-page-phone.png", full_page=False)  # what the phone shows


def test_dark_mode_is_dark_and_readable(make_rig: MakeRig, open_page: OpenPage) -> None:
    rig = studio(make_rig)
    page = open_page(rig.node.url + "/", color_scheme="dark")
    expect(page.locator("#recent")).to_contain_text("llama-9000", timeout=wait(5))
    colors = page.evaluate(
        "[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color,"
        " getComputedStyle(document.querySelector('section')).backgroundColor]"
    )
    body, text, card = (luminance(c) for c in colors)
    assert body < 0.05 and card < 0.1, colors
    assert (text + 0.05) / (body + 0.05) > 7, f"too little contrast: {colors}"
    shoot(page, "node-page-dark.png")


def test_names_from_the_network_are_shown_as_text(make_rig: MakeRig, open_page: OpenPage) -> None:
    evil = '<img src=x onerror="window.pwned=1">'
    rig = make_rig(
        {"<b>svc</b>": (FakeOllama(models=[evil]), {"engine": "ollama"})},
        node={"name": "<script>window.pwned=1</script>"},
    )
    page = open_page(rig.node.url + "/")
    expect(page.locator("h1")).to_have_text("<script>window.pwned=1</script>", timeout=wait(5))
    expect(page.locator("#models")).to_contain_text(evil)
    expect(page.locator("#services")).to_contain_text("<b>svc</b>")
    assert page.locator("img, b, #models script").count() == 0
    assert page.evaluate("window.pwned") is None


def luminance(css: str) -> float:
    """Relative luminance (WCAG) of an ``rgb(r, g, b)`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def test_a_relay_that_cannot_be_reached_is_shown_with_its_error(
    make_rig: MakeRig, open_page: OpenPage
) -> None:
    url = closed_port_url().replace("http://", "ws://") + "/tunnel"
    rig = make_rig(cluster={"token": TOKEN}, relay={"url": url})
    page = open_page(rig.node.url + "/")
    relay = page.locator("#relay")
    expect(relay).to_contain_text("not connected", timeout=wait(5))
    expect(relay).to_contain_text(url)
    expect(relay.locator(".err")).not_to_be_empty(timeout=wait(10))
