"""A real Chromium (Debian's ``chromium``, driven by playwright) for the browser tests.

Playwright never downloads a browser here: it is pointed at ``/usr/bin/chromium`` (or
``$QUORUM_TEST_CHROMIUM``). A missing browser fails the tests with the command that
installs it, rather than skipping them: CI installs it, so a skip would hide a broken
install.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness import timeout

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("QUORUM_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_configure(config: pytest.Config) -> None:
    # Also listed in pyproject's markers; registered here so tests/web runs on its own.
    config.addinivalue_line("markers", "browser: drives a real Chromium (Debian's chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: 'apt-get install chromium' "
            "(scripts/test installs it), or point QUORUM_TEST_CHROMIUM at one",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need the playwright package: 'pip install playwright' "
            "(no 'playwright install': the tests use the system Chromium)",
            pytrace=False,
        )
    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=timeout(30) * 1000
        )
        try:
            yield launched
        finally:
            launched.close()


OpenPage = Callable[..., "Page"]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """``open_page(url, **context_options)``: a fresh context, its page loaded, problems kept.

    Console errors and uncaught exceptions (a Content-Security-Policy violation among
    them) fail the test at teardown.
    """
    contexts = []
    problems: list[str] = []

    def open_(url: str, **options: Any) -> Page:
        options.setdefault("viewport", {"width": 1200, "height": 900})
        context = browser.new_context(**options)
        contexts.append(context)
        context.set_default_timeout(timeout(10) * 1000)
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, f"the page reported errors: {problems}"
