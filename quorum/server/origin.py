"""Who may use the node's loopback trust from a browser: the rules against DNS rebinding and
cross-site requests (pure: headers in, a verdict out).

A process on this machine is trusted without a credential, and so, without
these rules, would be any web page the user opens: a page rebound to
127.0.0.1 (``Host: evil.example:32768``) could read the node's status, and a
cross-site form could post to it. So loopback trust needs:

- a ``Host`` that names this machine: ``localhost`` (or ``*.localhost``),
  a loopback address, or the address the node is bound to;
- no cross-site ``Origin``: an origin on a loopback host
  (``http://localhost:3000``, a local web app) is the user's own; any other
  only when listed in ``node.allowed_origins`` (like ``OLLAMA_ORIGINS``; ``*``
  allows all);
- no ``Sec-Fetch-Site: cross-site`` without such an ``Origin``.

Allowed origins get CORS headers (and their preflights an answer), so
browser apps the user runs or lists work as with Ollama.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def _host_of(host_header: str) -> str:
    """``[::1]:32768`` -> ``::1``; ``Example.COM:80`` -> ``example.com``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def is_local_name(host: str) -> bool:
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, bind: str) -> bool:
    """Whether ``Host`` names this machine (no Host at all: HTTP/1.0 tools, allowed)."""
    if host_header is None:
        return True
    host = _host_of(host_header)
    return is_local_name(host) or (bind not in ("", "0.0.0.0", "::") and host == bind.lower())


def origin_allowed(origin: str, allowed: Collection[str]) -> bool:
    """Whether a browser page of ``origin`` may use this node."""
    if "*" in allowed or origin in allowed:
        return True
    if origin == "null":
        return False  # sandboxed frames, file:// pages: anyone's
    try:
        host = urlsplit(origin).hostname
    except ValueError:
        return False
    return host is not None and is_local_name(host)


def refusal(
    host: str | None,
    origin: str | None,
    fetch_site: str | None,
    bind: str,
    allowed: Collection[str],
) -> str | None:
    """Why a loopback request may not use loopback trust, or None when it may."""
    if not host_allowed(host, bind):
        return (
            f"The Host '{host}' is not this machine: requests that rely on this machine's "
            "trust must name it (localhost, 127.0.0.1 or [::1])."
        )
    if origin is not None:
        if origin_allowed(origin, allowed):
            return None
        return (
            f"Requests from web pages of {origin} are not allowed; add it to "
            "node.allowed_origins to let that site use this node."
        )
    if fetch_site == "cross-site":
        return "Cross-site requests from web pages are not allowed."
    return None
