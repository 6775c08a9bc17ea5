"""The node page's Content-Security-Policy, computed from the page's own inline blocks.

The page allows exactly its own ``<script>`` and ``<style>`` (by hash), talks only to
its own origin and loads nothing else, so it works offline and markup smuggled in
through a name could not run. After editing the page, ``python -m tests.web.csp``
writes the new hashes into it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "quorum" / "server" / "static" / "index.html"
META = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def _hashes(html: str, tag: str) -> list[str]:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in blocks
    ]


def policy(html: str) -> str:
    """The policy the page at ``html`` should carry."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(_hashes(html, "script")),
            "style-src " + " ".join(_hashes(html, "style")),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def declared(html: str) -> str:
    found = META.search(html)
    if found is None:
        raise AssertionError("the page has no Content-Security-Policy meta tag")
    return found.group(1)


def main() -> None:
    html = PAGE.read_text()
    declared(html)
    PAGE.write_text(META.sub(lambda m: m.group(0).replace(m.group(1), policy(html)), html, 1))
    print(policy(html))


if __name__ == "__main__":
    main()
