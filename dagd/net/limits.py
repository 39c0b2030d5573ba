"""Per-connection limits on what a client sends: a message rate and a message size."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` messages per second with bursts of twice that."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = 2 * rate
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """Take one token; returns the balance (negative: over the limit by that much)."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        self.tokens -= 1
        return self.tokens


def too_big(text: str | bytes, limit: int) -> bool:
    """Is the message over `limit` bytes? (trio-websocket's own limit counts characters.)"""
    if isinstance(text, bytes):
        return len(text) > limit
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
