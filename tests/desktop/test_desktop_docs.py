"""The user docs this area owns: links resolve, the screenshot is there, commands exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from PIL import Image

from quorum.cli import parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["README.md", "quickstart.md", "how-it-works.md", "engines.md", "desktop.md"]
PAGES += ["troubleshooting.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page: str) -> None:
    text = (DOCS / page).read_text()
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = DOCS / path if path else DOCS / page
        assert file.exists(), f"{page} links to a missing {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text()), f"{page}: no #{anchor} in {path}"


def test_the_tray_screenshot_is_a_png_the_docs_show() -> None:
    with Image.open(DOCS / "tray.png") as image:
        assert image.format == "PNG" and min(image.size) >= 48
    assert "](tray.png)" in (DOCS / "desktop.md").read_text()


def test_documented_commands_exist() -> None:
    subparsers = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(subparsers[0].choices)
    text = "\n".join((DOCS / page).read_text() for page in PAGES)
    for name in set(re.findall(r"`quorum ([a-z]+)", text)):
        assert name in commands, f"the docs mention 'quorum {name}', which does not exist"
