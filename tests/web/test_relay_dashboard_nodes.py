"""The dashboard's refused node keys and its Remove button, in a real Chromium against a
real relay process and real nodes (``RelayFleet``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from quorum.errors import AuthRefused
from quorum.secure import ClusterTLS, Identity
from quorum.tunnel.dial import dial_relay
from tests.fakes import FakeOllama, LoopThread
from tests.relay.test_relay_e2e import wait_until
from tests.web.conftest import OpenPage
from tests.web.relay_fleet import RelayFleet
from tests.web.test_node_page import row, shoot, wait
from tests.web.test_relay_dashboard import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def fleet(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayFleet]:
    made = RelayFleet(bg, tmp_path_factory.mktemp("relay-dashboard-nodes"))
    try:
        yield made
    finally:
        made.close()


async def _refused(url: str, token: str, tls: ClusterTLS) -> None:
    with pytest.raises(AuthRefused):
        await dial_relay(url, token, tls)


def test_a_refused_key_is_shown_and_a_removed_node_is_shut_out(
    fleet: RelayFleet, open_page: OpenPage, bg: LoopThread
) -> None:
    # A member (it has the token) with its own key, claiming the laptop's node id.
    laptop_id = fleet.node_rows()["laptop"]["node_id"]
    where = fleet.tmp / "impostor"
    impostor = ClusterTLS(Identity.load_or_create(where), laptop_id, fleet.token, where)
    for _ in range(2):
        bg.run(_refused(fleet.relay.url, fleet.token, impostor))

    page = sign_in(open_page, fleet)
    refused = page.locator("#refused tbody tr", has_text=laptop_id)
    expect(refused).to_contain_text(impostor.identity.short, timeout=wait(5))
    text = refused.inner_text()
    assert re.search(
        rf"{laptop_id}\s+home\s+{impostor.identity.short}\s+127\.0\.0\.1\s+(just now|\d+ s ago)"
        r"\s+2\s+another key than the one bound",
        text,
    ), text
    assert "laptop" in row(page, "fleet", "laptop")  # the real laptop is untouched: online
    expect(page.locator("#fleet tbody tr", has_text="laptop")).to_contain_text("online")

    # Without the page's CSRF token, the same session may not remove anything.
    spare = fleet.node(
        "spare", {"ollama": (FakeOllama(models=["tinyllama"]), {"engine": "ollama"})}
    )
    fleet.wait_connected("spare")
    spare_id = fleet.node_rows()["spare"]["node_id"]
    forged = page.request.post(
        f"{fleet.relay.http}/dashboard/nodes/{spare_id}/remove", data={"cluster": "home"}
    )
    assert forged.status == 403 and forged.json()["error"]["code"] == "csrf_failed"

    # Remove (two clicks): its tunnel closes at once, and its key is refused from then on.
    entry = page.locator("#fleet tbody tr", has_text="spare")
    expect(entry).to_contain_text("online", timeout=wait(5))
    entry.get_by_role("button", name="Remove").click()
    shoot(page, "relay-remove-node.png")
    entry.get_by_role("button", name="Confirm remove").click()
    expect(entry).to_contain_text("offline", timeout=wait(5))
    tunnel, tls = spare.ctx.tunnel, spare.ctx.tls
    assert tunnel is not None and tls is not None
    wait_until(lambda: tunnel.status.stopped, 15, "the removed node refused at the relay")
    assert "403" in (tunnel.status.last_error or ""), tunnel.status.last_error
    bg.run(_refused(fleet.relay.url, fleet.token, tls))  # its key, with the token even
    expect(page.locator("#refused tbody tr", has_text=spare_id)).to_contain_text(
        "the key of a removed node", timeout=wait(5)
    )
    assert fleet.node_rows()["laptop"]["connected"]  # no one else was touched
