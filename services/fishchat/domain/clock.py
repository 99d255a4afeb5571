"""Time as the chat core sees it: an injectable wall clock in integer milliseconds.

Token expiry, route TTLs, server timestamps and the sync gap grace all read the clock, so tests and
simulations can move time deterministically with `ManualClock` instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to: for deterministic tests of expiry and grace periods."""

    def __init__(self, start_ms: int = 1_750_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a manual clock only moves forward")
        self._now_ms += ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms
