"""Delays: step retries (deterministic exponential) and client reconnects (full jitter)."""

from __future__ import annotations

import random

from dagd.core.model import StepSpec


def retry_delay(step: StepSpec, failed_attempt: int) -> float:
    """Seconds to wait after attempt number `failed_attempt` (1-based) failed.

    `retry_delay * retry_backoff ** (failed_attempt - 1)`, capped by `max_retry_delay`.
    """
    exponent = max(0, failed_attempt - 1)
    try:
        delay = step.retry_delay * step.retry_backoff**exponent
    except OverflowError:
        delay = float("inf") if step.retry_delay > 0 else 0.0
    if step.max_retry_delay is not None:
        delay = min(delay, step.max_retry_delay)
    return delay


class ReconnectBackoff:
    """Exponential backoff with full jitter (AWS's "full jitter"), reset after a healthy connection.

    The n-th consecutive failure waits uniform(0, min(cap, base * 2**n)) seconds: clients that lost
    the same daemon spread out instead of reconnecting in lockstep.
    """

    def __init__(
        self, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * (1 << min(self.failures, 32)))  # base * 2**failures

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt, uniform in [0, ceiling()]; counts a
        failure."""
        delay = self._rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A connection was healthy: the next failure waits as little as the first."""
        self.failures = 0
