"""Rotating a cluster's join token from the dashboard, in a real Chromium against a real
relay process and real nodes (``RelayFleet``): the new token is shown once, both tokens
join through the grace, and "Refuse previous tokens now" shuts the old one out."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from quorum.errors import AuthRefused
from quorum.secure import ClusterTLS, Identity
from quorum.tunnel.dial import dial_relay
from tests.fakes import LoopThread
from tests.relay.test_relay_e2e import wait_until
from tests.web.conftest import OpenPage
from tests.web.relay_fleet import RelayFleet
from tests.web.test_node_page import wait
from tests.web.test_relay_dashboard import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def fleet(bg: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayFleet]:
    made = RelayFleet(bg, tmp_path_factory.mktemp("relay-dashboard-rotate"))
    try:
        yield made
    finally:
        made.close()


async def _joins(url: str, token: str, tls: ClusterTLS) -> bool:
    try:
        await (await dial_relay(url, token, tls)).close()
    except AuthRefused:
        return False
    return True


def test_a_token_rotated_from_the_dashboard(
    fleet: RelayFleet, open_page: OpenPage, bg: LoopThread
) -> None:
    page = sign_in(open_page, fleet)
    page.locator("#rotate-cluster").select_option(label="home")
    page.locator("#rotate-grace").select_option("24h")
    page.locator("#rotate-go").click()
    expect(page.locator("#rotate-go")).to_have_text("Confirm rotate")
    assert page.locator("#rotated").is_hidden()  # one click does nothing yet
    page.locator("#rotate-go").click()
    shown = page.locator("#rotated-token")
    expect(shown).to_have_text(re.compile(r"^qc_\S{40,}$"), timeout=wait(5))
    new = shown.inner_text()
    assert new != fleet.token
    expect(page.locator("#rotate-note")).to_contain_text("The previous token of home works until")
    page.locator("#rotated-done").click()
    assert new not in page.content()

    def member(name: str, token: str) -> ClusterTLS:
        where = fleet.tmp / name
        return ClusterTLS(Identity.load_or_create(where), name, token, where)

    # Through the grace: the old token's nodes stay, a member of either token joins.
    assert bg.run(_joins(fleet.relay.url, new, member("moved", new)))
    assert bg.run(_joins(fleet.relay.url, fleet.token, member("old-1", fleet.token)))
    assert fleet.node_rows()["laptop"]["connected"]

    page.locator("#rotate-finish").click()
    expect(page.locator("#rotate-note")).to_contain_text(
        "The previous token of home is refused from now on (2 tunnel(s) closed).", timeout=wait(5)
    )
    for node in fleet.nodes:  # gpu-box and laptop joined with the previous token
        tunnel = node.ctx.tunnel
        assert tunnel is not None
        wait_until(lambda t=tunnel: t.status.stopped, 15, "an old-token node refused")
    assert not bg.run(_joins(fleet.relay.url, fleet.token, member("old-2", fleet.token)))
    assert bg.run(_joins(fleet.relay.url, new, member("moved", new)))
    assert new not in fleet.relay.log.read_text() and fleet.token not in fleet.relay.log.read_text()
