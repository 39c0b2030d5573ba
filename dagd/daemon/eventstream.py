"""Events for an in-process consumer: an async iterator over one hub subscription.

What `Daemon.events()` returns: embedders iterate it with a plain `async for`, one event at a
time, while it takes everything queued at each wake-up so a fast run does not outpace it.
"""

from __future__ import annotations

from collections import deque

import trio

from dagd.core.events import DagEvent
from dagd.daemon.errors import DaemonError
from dagd.daemon.hub import Subscriber
from dagd.daemon.store import StoredEvent


class EventStream:
    """Async iterator of DagEvents over a hub subscription. If the consumer falls more than
    `buffer` events behind, iteration raises DaemonError('slow_consumer') instead of making the
    daemon wait; `close()` (or `with`) ends the subscription."""

    def __init__(self, sub: Subscriber) -> None:
        self._sub = sub
        self._taken: deque[object] = deque()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DagEvent:
        # Take everything queued at each wake-up: a consumer that took one event per turn
        # would get fewer turns than a fast run publishes events, and be cut off. Memory stays
        # bounded: at most one buffer here and one in the subscription.
        if not self._taken:
            sub = self._sub
            try:
                self._taken.append(await sub.get())
            except trio.EndOfChannel:
                if sub.overflowed:
                    raise DaemonError(
                        "slow_consumer", "the event consumer fell behind its buffer"
                    ) from None
                raise StopAsyncIteration from None
            while True:
                try:
                    self._taken.append(sub.get_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        stored = self._taken.popleft()
        assert isinstance(stored, StoredEvent)  # only the hub puts in this subscription
        return stored.event

    def close(self) -> None:
        """End the subscription; iteration then ends after what was already taken."""
        self._sub.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EventStream"]
