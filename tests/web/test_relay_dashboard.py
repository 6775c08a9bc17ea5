"""The relay's dashboard in a real Chromium, against a real relay process and two real nodes.

Every page is signed in with the admin token; apps use the keys made here with the
``openai`` SDK against the relay's public ``/v1``. Screenshots go to ``docs/`` (or
``$QUORUM_SCREENSHOT_DIR``), linked from the README.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.fakes import FakeOllama, LoopThread
from tests.web.conftest import OpenPage
from tests.web.relay_fleet import GPU_MODEL, LAPTOP_MODEL, SHARED_MODEL, RelayFleet
from tests.web.test_node_page import PHONE, SHOTS, luminance, row, shoot, wait

pytestmark = pytest.mark.browser

PAGES = ("fleet", "models", "keys", "usage")


@pytest.fixture(scope="module")
def fleet(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayFleet]:
    made = RelayFleet(bg, tmp_path_factory.mktemp("relay-dashboard"))
    try:
        made.seed_history()
        made.seed_keys()
        yield made
    finally:
        made.close()


def sign_in(open_page: OpenPage, fleet: RelayFleet, **options: object) -> Page:
    page = open_page(fleet.url, **options)
    page.locator("#token").fill(fleet.admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live")).to_have_text("live", timeout=wait(10))
    return page


def go(page: Page, name: str) -> None:
    page.locator(f'#tabs a[data-page="{name}"]').click()
    expect(page.locator(f"#page-{name}")).to_be_visible()


def chat(client: openai.OpenAI, model: str, text: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return answer.choices[0].message.content or ""


def test_a_wrong_token_is_refused_and_the_right_one_shows_both_nodes_online(
    fleet: RelayFleet, browser: Browser
) -> None:
    # Not ``open_page``: Chromium logs the refusal (a 401 page) as a console error, the
    # one error this test expects.
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(wait(10))
    problems: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        refused_then_signed_in(fleet, page)
    finally:
        context.close()
    assert problems == [REFUSED], problems


REFUSED = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"


def refused_then_signed_in(fleet: RelayFleet, page: Page) -> None:
    page.goto(fleet.url)
    expect(page).to_have_title("Sign in · Quorum relay")
    page.locator("#token").fill("qa_this-is-not-the-admin-token")
    with page.expect_response("**/dashboard/signin") as refused:
        page.get_by_role("button", name="Sign in").click()
    assert refused.value.status == 401
    expect(page.locator("#error")).to_have_text("Wrong admin token.")
    assert not [c for c in page.context.cookies() if c["name"] == "quorum_relay_session"]

    page.locator("#token").fill(fleet.admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_title("Fleet · Quorum relay")
    expect(page.locator("#live")).to_have_text("live", timeout=wait(10))
    (session,) = [c for c in page.context.cookies() if c["name"] == "quorum_relay_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # out of reach of any script

    expect(page.locator("#nodes-online")).to_have_text("2 of 2", timeout=wait(5))
    gpu = row(page, "fleet", "gpu-box")
    assert re.search(r"home\s+online\s+(just now|\d+ s ago)\s+tunnel from 127\.0\.0\.1", gpu), gpu
    assert GPU_MODEL in gpu and "whisper-1" in gpu and "stt" in gpu
    laptop = row(page, "fleet", "laptop")
    assert "online" in laptop and LAPTOP_MODEL in laptop and SHARED_MODEL in laptop
    assert re.search(r"connected for \d+ (s|min)", laptop), laptop
    shoot(page, "relay-fleet.png")


def test_models_show_each_holder_and_type(fleet: RelayFleet, open_page: OpenPage) -> None:
    page = sign_in(open_page, fleet)
    go(page, "models")
    shared = row(page, "models", SHARED_MODEL)
    assert re.search(r"home\s+llm\s+.*gpu-box.*laptop.*\s+2 of 2$", shared, re.DOTALL), shared
    assert re.search(r"stt\s+gpu-box\s+1 of 1", row(page, "models", "whisper-1"))
    assert "laptop" in row(page, "models", LAPTOP_MODEL)
    shoot(page, "relay-models.png")


def test_a_key_is_made_used_seen_live_in_usage_and_revoked(
    fleet: RelayFleet, open_page: OpenPage
) -> None:
    page = sign_in(open_page, fleet, permissions=["clipboard-read", "clipboard-write"])
    go(page, "keys")
    page.evaluate("window.sameDocument = true")
    page.locator("#key-cluster").select_option(label="home")
    page.locator("#key-name").fill("phone app")
    page.locator("#key-expires").select_option("30d")
    page.locator("#key-create").click()
    shown = page.locator("#created-key")
    expect(shown).to_have_text(re.compile(r"^qk_[0-9a-f]{8}_\S{20,}$"), timeout=wait(5))
    key = shown.inner_text()
    prefix = key[:11]
    page.locator("#copy-key").click()
    expect(page.locator("#copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    listed = row(page, "keys", prefix)
    assert re.search(
        r"phone app\s+home\s+all\s+(just now|\d+ s ago)\s+in (29 d 23|30 d 0) h\s+never\s+active",
        listed,
    ), listed
    ci = row(page, "keys", "ci runner")
    assert re.search(
        rf"{re.escape(SHARED_MODEL)}\s+.*in (89 d 23|90 d 0) h\s+(just now|\d+ s ago)\s+active", ci
    )
    # The shown-once box, with the key itself masked out of the picture.
    page.screenshot(
        path=SHOTS / "relay-keys.png",
        full_page=True,
        animations="disabled",
        mask=[shown],
        mask_color="#8c959f",
    )
    page.locator("#created-done").click()
    expect(page.locator("#created")).to_be_hidden()
    assert key not in page.content()

    # The SDK, from outside the cluster; the page shows the request without a reload.
    go(page, "usage")
    with fleet.client(key) as client:
        assert chat(client, SHARED_MODEL, "seen live?") == "You said: seen live?"
    latest = page.locator("#recent tbody tr").first
    expect(latest).to_contain_text(prefix, timeout=wait(5))
    assert re.search(rf"{re.escape(SHARED_MODEL)}\s+(gpu-box|laptop)\s+qk_", latest.inner_text())
    page.locator('#usage-by button[data-by="key"]').click()
    assert re.search(
        r"phone app\)\s+1\s+0\s+\d+\s+\d+\s+[\d.]+ ms", row(page, "usage-table", prefix)
    )
    assert page.locator("#chart-requests svg rect").count() > 0
    assert page.locator("#chart-ttfb svg circle").count() > 0
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    page.locator('#usage-by button[data-by="model"]').click()
    shoot(page, "relay-usage.png")

    # Revoke (two clicks: no dialog), and the next call is refused.
    go(page, "keys")
    entry = page.locator("#keys tbody tr", has_text=prefix)
    used = entry.locator('td[data-label="Last used"]')
    expect(used).to_have_text(re.compile(r"^(just now|\d+ s ago)$"), timeout=wait(5))
    entry.get_by_role("button", name="Revoke").click()
    entry.get_by_role("button", name="Confirm revoke").click()
    expect(entry).to_contain_text("revoked", timeout=wait(5))
    with fleet.client(key) as client, pytest.raises(openai.AuthenticationError):
        chat(client, SHARED_MODEL, "still there?")

    # Nothing shows the key again: not the pages, not the API, not the relay's log.
    page.reload()
    for name in PAGES:
        go(page, name)
        expect(page.locator("#live")).to_have_text("live")
        assert key not in page.content(), name
    assert prefix in page.content()
    assert key not in json.dumps(fleet.api("/api/v1/keys?revoked=1"))
    assert key not in fleet.relay.log.read_text()


def test_a_stopped_node_goes_offline_at_once(fleet: RelayFleet, open_page: OpenPage) -> None:
    spare = fleet.node(
        "spare", {"ollama": (FakeOllama(models=["tinyllama"]), {"engine": "ollama"})}
    )
    fleet.wait_connected("spare")
    page = sign_in(open_page, fleet)
    entry = page.locator("#fleet tbody tr", has_text="spare")
    expect(entry).to_contain_text("online", timeout=wait(5))
    fleet.stop(spare)
    # Its last heartbeat is seconds old (presence calls that online for 60 s); its
    # tunnel is gone, and the page says so at once.
    expect(entry).to_contain_text("offline", timeout=wait(5))
    assert "not connected" in entry.inner_text()
    state = fleet.node_rows()["spare"]
    assert state["connected"] is False and state["online"] is True
    go(page, "models")
    assert re.search(r"spare \(offline\)\s+0 of 1", row(page, "models", "tinyllama"))


def test_phone_sized_and_dark(fleet: RelayFleet, open_page: OpenPage) -> None:
    page = sign_in(
        open_page,
        fleet,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    for name in PAGES:
        go(page, name)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"{name}: {widths[0]} px wide on a {widths[1]} px screen"
    expect(page.locator("#recent thead")).to_be_hidden()  # rows become labelled blocks
    colors = page.evaluate(
        "[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color,"
        " getComputedStyle(document.querySelector('section')).backgroundColor]"
    )
    body, text, card = (luminance(c) for c in colors)
    assert body < 0.05 and card < 0.1, colors
    assert (text + 0.05) / (body + 0.05) > 7, f"too little contrast: {colors}"
    expect(page.locator("#chart-requests svg")).to_be_visible()
    shoot(page, "relay-phone-dark.png", full_page=False)


def test_names_from_the_network_are_shown_as_text(fleet: RelayFleet, open_page: OpenPage) -> None:
    evil = '<img src=x onerror="window.pwned=1">'
    fleet.api("/api/v1/keys", {"cluster": "home", "name": evil})
    fleet.api("/api/v1/clusters", {"name": "<script>window.pwned=1</script>"})
    page = sign_in(open_page, fleet)
    go(page, "keys")
    expect(page.locator("#keys")).to_contain_text(evil, timeout=wait(5))
    expect(page.locator("#key-cluster")).to_contain_text("<script>window.pwned=1</script>")
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.pwned") is None
