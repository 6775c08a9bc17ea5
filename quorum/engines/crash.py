"""What an engine process's exit means, in plain words (pure; no I/O).

A child process that dies from a signal has a negative return code in Python
(``-4`` for SIGILL). Users should never have to decode that: SIGILL means the
engine's library uses instructions this CPU does not have, i.e. it was built
for another machine, and the fix is a portable rebuild.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass


def rebuild_command(python: str | None = None) -> str:
    """The command that rebuilds the embedded engine portably, for ``python``."""
    return f"{python or sys.executable} -m quorum.engines.portable --rebuild"


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended: ``signal_name`` is set when a signal killed it."""

    code: int
    signal_name: str | None
    wrong_cpu: bool
    summary: str  # one line, e.g. "crashed with SIGILL (illegal instruction)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_PLAIN = {
    "SIGILL": "illegal instruction",
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGABRT": "aborted",
    "SIGKILL": "killed, perhaps for lack of memory",
    "SIGFPE": "arithmetic fault",
}


def describe_exit(code: int) -> Exit:
    """Describe a ``returncode`` as :mod:`subprocess` and :mod:`asyncio` report it.

    Shells report a signal as ``128 + n``; that form is understood too for the
    signals that mean a crash.
    """
    number = -code if code < 0 else 0
    if code > 128 and _signal_name(code - 128) in _PLAIN:
        number = code - 128
    if number:
        name = _signal_name(number)
        plain = _PLAIN.get(name)
        summary = f"crashed with {name}" + (f" ({plain})" if plain else "")
        return Exit(code, name, name == "SIGILL", summary)
    return Exit(code, None, False, f"exited with status {code}")


def explain(exit: Exit, python: str | None = None) -> str:
    """A sentence for logs, status and error messages, with the fix where there is one."""
    if exit.wrong_cpu:
        return (
            f"the embedded engine {exit.summary}: it was built for another CPU. "
            f"Rebuild it for this machine with: {rebuild_command(python)}"
        )
    return f"the embedded engine {exit.summary}"
