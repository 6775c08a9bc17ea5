"""``quorum doctor``'s relay and clock checks: name, TCP, TLS, ``/healthz``, token, skew."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
import websockets
from websockets.exceptions import InvalidHandshake, InvalidStatus

from quorum.config.models import Config
from quorum.doctor.checks import Timeouts
from quorum.doctor.report import Check, Finding, Status

MAX_SKEW_S = 5.0


@dataclass(frozen=True, slots=True)
class RelayProbe:
    findings: tuple[Finding, ...]
    skew_s: float | None  # local clock minus the relay's, when its Date header was read


async def check_relay(
    config: Config, session: aiohttp.ClientSession, timeouts: Timeouts
) -> list[Finding]:
    probe = await probe_relay(config, session, timeouts)
    return [*probe.findings, *judge_skew(probe.skew_s, reachable=config.relay.url is not None)]


def judge_skew(skew_s: float | None, *, reachable: bool) -> list[Finding]:
    """The clock finding for a measured skew (None: nothing to compare with)."""
    if skew_s is None:
        why = "the relay did not answer" if reachable else "no relay to compare with"
        return [Finding(Check.CLOCK, Status.INFO, f"clock not checked ({why})")]
    if abs(skew_s) <= MAX_SKEW_S:
        return [Finding(Check.CLOCK, Status.OK, f"clock within {abs(skew_s):.0f} s of the relay's")]
    ahead = "ahead of" if skew_s > 0 else "behind"
    return [
        Finding(
            Check.CLOCK,
            Status.FAIL,
            f"this machine's clock is {abs(skew_s):.0f} s {ahead} the relay's",
            "turn on network time (Linux: sudo timedatectl set-ntp true; macOS: Date & Time > "
            "Set time automatically; Windows: Settings > Time > Sync now)",
        )
    ]


async def probe_relay(
    config: Config, session: aiohttp.ClientSession, timeouts: Timeouts
) -> RelayProbe:
    url = config.relay.url
    if url is None:
        return RelayProbe(
            (
                Finding(
                    Check.RELAY, Status.INFO, "no relay configured: peers are found on the LAN only"
                ),
            ),
            None,
        )
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    where = f"{host}:{port}"
    unreachable_fix = (
        f"check that the relay runs (on its server: systemctl status quorum-relay) and listens "
        f"on port {port}, that relay.url is right, and that outgoing connections to {where} "
        "are allowed"
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeouts.connect_s):
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        return RelayProbe(
            (
                Finding(
                    Check.RELAY,
                    Status.FAIL,
                    f"cannot resolve the relay's host {host!r}: {getattr(exc, 'strerror', exc)}",
                    "check relay.url for typos, and this machine's DNS",
                ),
            ),
            None,
        )
    try:
        async with asyncio.timeout(timeouts.connect_s):
            _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeouts.connect_s:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused (nothing listens there)"
        else:
            why = exc.strerror or str(exc)
        return RelayProbe(
            (
                Finding(
                    Check.RELAY,
                    Status.FAIL,
                    f"relay unreachable at {where}: {why}",
                    unreachable_fix,
                ),
            ),
            None,
        )
    findings = [Finding(Check.RELAY, Status.OK, f"TCP connects to {where}")]
    health = f"{'https' if secure else 'http'}://{parts.netloc}/healthz"
    skew: float | None = None
    try:
        sent = time.time()
        async with session.get(
            health, timeout=aiohttp.ClientTimeout(total=timeouts.http_s)
        ) as resp:
            await resp.read()
            received = time.time()
            status, date = resp.status, resp.headers.get("Date")
    except aiohttp.ClientConnectorCertificateError as exc:
        findings.append(
            Finding(
                Check.RELAY,
                Status.FAIL,
                f"the relay's TLS certificate is not trusted: {exc.certificate_error}",
                "give the relay's reverse proxy a valid certificate (e.g. Let's Encrypt), "
                "and check this machine's clock",
            )
        )
        return RelayProbe(tuple(findings), None)
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        findings.append(
            Finding(
                Check.RELAY,
                Status.FAIL,
                f"no HTTP answer from {health}: {type(exc).__name__} {exc}".rstrip(),
                unreachable_fix,
            )
        )
        return RelayProbe(tuple(findings), None)
    if status == 200:
        findings.append(Finding(Check.RELAY, Status.OK, f"{health} answers 200"))
    else:
        findings.append(
            Finding(
                Check.RELAY,
                Status.WARN,
                f"{health} answers {status}",
                "is relay.url the relay's address, and not another web server's?",
            )
        )
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            server = parsedate_to_datetime(date).timestamp()
            # The Date header has whole seconds; compare with the middle of the request.
            skew = (sent + received) / 2 - server - 0.5
    findings.extend(await _check_token(url, config.cluster.token, timeouts))
    return RelayProbe(tuple(findings), skew)


async def _check_token(url: str, token: str | None, timeouts: Timeouts) -> Sequence[Finding]:
    if token is None:
        return [
            Finding(
                Check.RELAY,
                Status.FAIL,
                "relay.url is set but there is no cluster token to present",
                "set cluster.token (from 'quorum-relay cluster create') on every node",
            )
        ]
    try:
        async with asyncio.timeout(timeouts.http_s):
            connection = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=None,
                ping_interval=None,
            )
            await connection.close()
    except InvalidStatus as exc:
        code = exc.response.status_code
        if code in (401, 403):
            return [
                Finding(
                    Check.RELAY,
                    Status.FAIL,
                    f"the relay refused the cluster token (HTTP {code})",
                    "copy the join token printed by 'quorum-relay cluster create' into "
                    "cluster.token (the same on every node of the cluster)",
                )
            ]
        return [
            Finding(
                Check.RELAY,
                Status.WARN,
                f"the relay's tunnel answered HTTP {code} instead of accepting the connection",
                "is relay.url the tunnel's address (wss://HOST/tunnel)?",
            )
        ]
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        return [
            Finding(
                Check.RELAY,
                Status.WARN,
                f"could not open the tunnel: {type(exc).__name__} {exc}".rstrip(),
                "is relay.url the tunnel's address (wss://HOST/tunnel)?",
            )
        ]
    return [Finding(Check.RELAY, Status.OK, "the relay accepted the cluster token")]
