"""``quorum doctor``: check this machine for what stops a node from working, and say why.

It checks, in this order: the engines (configured ones answer, the usual local
ports), the node's port, LAN discovery (mDNS multicast on each interface), the
relay (name, TCP, TLS, ``/healthz``, the cluster token) and the clock (against
the relay's). Every problem is printed with how to fix it; the exit code is 1
when any check failed, else 0.

- :mod:`~quorum.doctor.report`: findings and how they print (pure);
- :mod:`~quorum.doctor.checks`, :mod:`~quorum.doctor.multicast`,
  :mod:`~quorum.doctor.relay`: the checks themselves (I/O, bounded in time).
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp

from quorum.config.models import Config
from quorum.doctor.checks import Timeouts, check_engines, check_port
from quorum.doctor.multicast import check_multicast
from quorum.doctor.relay import check_relay
from quorum.doctor.report import Check, Finding, Report, Status, make_report, render

__all__ = ["Check", "Finding", "Report", "Status", "Timeouts", "cli", "diagnose", "render"]


async def diagnose(config: Config, timeouts: Timeouts | None = None) -> Report:
    """Run every check at once and gather their findings into one report."""
    timeouts = timeouts or Timeouts()
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeouts.http_s, sock_connect=timeouts.connect_s),
    ) as session:
        groups = await asyncio.gather(
            *(
                check(config, session, timeouts)
                for check in (check_engines, check_port, check_multicast, check_relay)
            )
        )
    return make_report(finding for group in groups for finding in group)


def cli(config: Config, *, as_json: bool = False) -> int:
    """``quorum doctor [--json]``: print the report; 1 when something is wrong."""
    report = asyncio.run(diagnose(config))
    if as_json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(render(report, header=f"Quorum doctor: node '{config.node.name}'"), end="")
    return report.exit_code
