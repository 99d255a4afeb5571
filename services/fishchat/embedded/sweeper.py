"""Rate limit for lazy clean-ups of expired rows: at most one sweep per interval, piggybacked on writes."""

from __future__ import annotations

from fishchat.domain.clock import Clock

SWEEP_INTERVAL_MS = 60_000


class Sweeper:
    def __init__(self, clock: Clock, interval_ms: int = SWEEP_INTERVAL_MS) -> None:
        self._clock = clock
        self._interval_ms = interval_ms
        self._last_ms: int | None = None

    def due(self, now_ms: int | None = None) -> bool:
        """True (and the interval restarts) if the last sweep is at least one interval ago."""
        now = self._clock.now_ms() if now_ms is None else now_ms
        if self._last_ms is not None and now - self._last_ms < self._interval_ms:
            return False
        self._last_ms = now
        return True
