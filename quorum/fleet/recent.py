"""Models the fleet held lately: a model whose holders just vanished is "unreachable", not
"unknown" (pure; time comes in as ``now``).

SDKs treat 404 ``model_not_found`` as permanent, and a laptop that sleeps or a
relay that restarts takes its models away for a moment. So a model seen in
the last ``window_s`` whose holders are gone is answered as a 503 with
``Retry-After``; only a model not seen for that long is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

WINDOW_S = 300.0


class RecentModels:
    """When each model was last held by some node of the fleet."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._last: dict[str, float] = {}

    def saw(self, models: Iterable[str], now: float) -> None:
        """``models`` are held now; forget what nobody held for longer than the window."""
        last = self._last
        for model in models:
            last[model] = now
        if len(last) > 64:
            cutoff = now - self.window_s
            for model in [m for m, t in last.items() if t < cutoff]:
                del last[model]

    def gone_for(self, model: str, now: float) -> float | None:
        """Seconds since ``model`` was last held, if within the window; else None."""
        seen = self._last.get(model)
        if seen is None or now - seen > self.window_s:
            return None
        return now - seen
