"""What ``quorum doctor`` found, as values, and how it is printed. Pure: no I/O.

Every check yields :class:`Finding` values: a status, one line saying what was
seen, and, for anything that is not fine, one line saying how to fix it. A
:class:`Report` is their ordered tuple; it fails when any finding fails.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


class Status(enum.StrEnum):
    OK = "ok"
    INFO = "info"  # worth knowing, not a problem
    WARN = "warn"  # may be a problem, depending on what the user wants
    FAIL = "fail"  # something is wrong: the exit code says so


class Check(enum.StrEnum):
    """The areas checked, in the order they are printed."""

    ENGINES = "engines"
    PORT = "port"
    MULTICAST = "multicast"
    RELAY = "relay"
    CLOCK = "clock"


TITLES = {
    Check.ENGINES: "Engines",
    Check.PORT: "Port",
    Check.MULTICAST: "LAN discovery (mDNS multicast)",
    Check.RELAY: "Relay",
    Check.CLOCK: "Clock",
}

MARKS = {Status.OK: "ok  ", Status.INFO: "info", Status.WARN: "warn", Status.FAIL: "FAIL"}


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    status: Status
    summary: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status is Status.WARN)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": len(self.problems),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


def make_report(findings: Iterable[Finding]) -> Report:
    """Findings grouped by check, in :class:`Check` order, each group in the order found."""
    order = list(Check)
    return Report(tuple(sorted(findings, key=lambda f: order.index(f.check))))


def render(report: Report, *, header: str = "") -> str:
    """The report as the terminal shows it."""
    lines = [header, ""] if header else []
    current: Check | None = None
    for finding in report.findings:
        if finding.check is not current:
            if current is not None:
                lines.append("")
            current = finding.check
            lines.append(TITLES[current])
        lines.append(f"  {MARKS[finding.status]}  {finding.summary}")
        if finding.fix and finding.status is not Status.OK:
            lines.append(f"        fix: {finding.fix}")
    lines.append("")
    problems, warnings = len(report.problems), len(report.warnings)
    if problems:
        lines.append(
            f"{problems} problem{'s' if problems != 1 else ''} found"
            + (f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else "")
            + ": see 'fix' above, and docs/troubleshooting.md."
        )
    elif warnings:
        lines.append(f"No problems; {warnings} warning{'s' if warnings != 1 else ''}.")
    else:
        lines.append("No problems found.")
    return "\n".join(lines) + "\n"
