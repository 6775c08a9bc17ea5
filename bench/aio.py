"""The event loop the benchmark's own processes run on: uvloop when installed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Callable[[bool], Coroutine[Any, Any, T]]) -> T:
    """``main(uvloop_used)`` to completion, on uvloop when it is importable."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main(False))
    return uvloop.run(main(True))
