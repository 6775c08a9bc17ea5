"""DNS rebinding and blind CSRF from a real Chromium page, with its local-network checks off
(as in Firefox and Safari, which have none).

``evil.example`` resolves to 127.0.0.1 inside this browser (``--host-resolver-rules``), and
the attacker's page is served for it (playwright answers the document request), so its
same-origin ``fetch`` reaches the node with ``Host: evil.example:PORT``: a rebinding
attack. A second page posts a cross-site form to the node's speech-to-text endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import MakeRig, Rig
from tests.fakes import FakeOllama, FakeWhisper
from tests.harness import timeout
from tests.web.conftest import CHROMIUM, FLAGS

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser

REBIND = """
<html><body><script>
window.results = {};
(async () => {
  for (const path of ["/quorum/v1/status", "/v1/models"]) {
    try {
      const r = await fetch(path);
      window.results[path] = {status: r.status, body: await r.text()};
    } catch (e) { window.results[path] = {error: String(e)}; }
  }
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: "llama3.2:1b", messages: [{role: "user", content: "x"}]})});
    window.results.chat = {status: r.status};
  } catch (e) { window.results.chat = {error: String(e)}; }
  window.done = true;
})();
</script></body></html>
"""

CSRF = """
<html><body>
<form id="f" method="POST" enctype="multipart/form-data" action="{target}">
  <input name="model" value="whisper-1"><input type="file" name="file">
</form>
<script>document.getElementById("f").submit();</script>
</body></html>
"""


@pytest.fixture
def browser_off(rig_port: int) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    flags = [
        *FLAGS,
        "--host-resolver-rules=MAP evil.example 127.0.0.1",
        "--disable-features=PrivateNetworkAccessSendPreflights,"
        "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests,"
        "LocalNetworkAccessChecks",
    ]
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=flags, timeout=timeout(30) * 1000
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig({"ollama": (FakeOllama(), {}), "asr": (FakeWhisper(), {"type": "stt"})})


@pytest.fixture
def rig_port(rig: Rig) -> int:
    return int(rig.node.url.rsplit(":", 1)[1])


def test_a_rebound_page_reads_and_runs_nothing(
    rig: Rig, rig_port: int, browser_off: Browser
) -> None:
    evil = f"http://evil.example:{rig_port}/"
    context = browser_off.new_context()
    try:
        page = context.new_page()
        page.route(evil, lambda route: route.fulfill(body=REBIND, content_type="text/html"))
        page.goto(evil)
        page.wait_for_function("window.done === true", timeout=timeout(20) * 1000)
        results = page.evaluate("window.results")
    finally:
        context.close()
    status = results["/quorum/v1/status"]
    assert status["status"] == 403, status
    assert "node-a" not in status["body"]  # the node's name: nothing of its inventory leaked
    assert json.loads(status["body"])["error"]["code"] == "origin_not_allowed"
    assert results["/v1/models"]["status"] == 403
    assert results["chat"]["status"] == 403
    assert rig.fakes["ollama"].requests_to("/v1/chat/completions") == []


def test_a_cross_site_form_reaches_no_engine(rig: Rig, rig_port: int, browser_off: Browser) -> None:
    attacker = "http://attacker.example/"
    target = f"http://127.0.0.1:{rig_port}/v1/audio/transcriptions"
    context = browser_off.new_context()
    try:
        page = context.new_page()
        page.route(
            attacker,
            lambda route: route.fulfill(body=CSRF.format(target=target), content_type="text/html"),
        )
        with page.expect_response(target, timeout=timeout(20) * 1000) as answered:
            page.goto(attacker)
        response = answered.value
        assert response.status == 403
        assert response.request.headers.get("origin") == "http://attacker.example"
    finally:
        context.close()
    assert rig.fakes["asr"].requests_to("/v1/audio/transcriptions") == []
