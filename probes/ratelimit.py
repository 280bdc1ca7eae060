"""``TokenBucket``: the one rate limiter of the project (the agent's publish drain rate, the trap
receiver's events per second)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` units per second with a burst of ``burst`` units (default: one second's worth). The
    bucket starts full. A request larger than the burst may go once the bucket is full, so nothing
    is stuck forever; a ``rate`` of 0 or less means no limit."""

    __slots__ = ("rate", "burst", "clock", "tokens", "last")

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, *, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.clock = clock
        self.tokens = self.burst
        self.last = clock()

    def take(self, n: float) -> bool:
        """Take ``n`` units if the bucket holds them (refilled for the time since the last call)."""
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= min(n, self.burst):
            self.tokens -= n
            return True
        return False
