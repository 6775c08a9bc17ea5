"""The browser fixtures of tests/web (a real Chromium), for the sign-in tests."""

from tests.web.conftest import browser, open_page, pytest_configure

__all__ = ["browser", "open_page", "pytest_configure"]
