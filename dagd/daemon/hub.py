"""Fan-out of committed events to subscribers, never waiting for any of them.

Each subscriber has a bounded queue. `publish` puts events in with `send_nowait`; a subscriber
whose queue is full is cut off (`overflowed` is set and its queue closed after what it already
holds), because a client that cannot keep up must not make the daemon wait or grow without
bound. It loses nothing for good: every event is in the log, and `replay` fetches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sized

import trio

from dagd.daemon.store import StoredEvent


class Subscriber:
    """One consumer's view of the stream: a bounded queue of events for the DAGs it wants."""

    def __init__(self, hub: Hub, dag_ids: Iterable[str] | None, buffer: int) -> None:
        self._hub = hub
        self.dag_ids: set[str] | None = None if dag_ids is None else set(dag_ids)
        self._send, self.receive = trio.open_memory_channel[StoredEvent](
            buffer if buffer > 0 else math.inf
        )
        self.overflowed = False
        self.closed = False
        #: Optional fast path: takes the events this subscriber wants and returns True if it
        #: delivered them itself (the WebSocket server writes straight to an idle socket).
        self.direct: Callable[[list[StoredEvent]], bool] | None = None
        # The channel's own deque, if this trio has one where we expect it: `statistics()`
        # builds an object per call (1.1 µs), and the WebSocket fast path asks once per
        # delivery. A test holds the two answers equal.
        self._buffer: Sized | None = getattr(getattr(self.receive, "_state", None), "data", None)

    def queued(self) -> int:
        """How many items wait in the queue."""
        if self._buffer is not None:
            return len(self._buffer)
        return self.receive.statistics().current_buffer_used

    def wants(self, dag_id: str) -> bool:
        return self.dag_ids is None or dag_id in self.dag_ids

    def set_dags(self, dag_ids: Iterable[str] | None) -> None:
        """Change the filter: None means every DAG."""
        self.dag_ids = None if dag_ids is None else set(dag_ids)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._subscribers.discard(self)
            self._send.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> StoredEvent:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.delivered = 0
        self.dropped_subscribers = 0

    def subscribe(self, dag_ids: Iterable[str] | None = None, buffer: int = 1024) -> Subscriber:
        sub = Subscriber(self, dag_ids, buffer)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """End every subscription (their iterators finish after what they already hold)."""
        for sub in list(self._subscribers):
            sub.close()

    def publish(self, events: list[StoredEvent]) -> None:
        """Deliver a committed batch, in order, to every subscriber that wants it."""
        for sub in list(self._subscribers):
            dag_ids = sub.dag_ids
            wanted = events if dag_ids is None else [e for e in events if e.dag_id in dag_ids]
            if not wanted:
                continue
            if sub.direct is not None and sub.direct(wanted):
                self.delivered += len(wanted)
                continue
            send = sub._send.send_nowait
            try:
                for stored in wanted:
                    send(stored)
                    self.delivered += 1
            except trio.WouldBlock:
                sub.overflowed = True
                self.dropped_subscribers += 1
                sub.close()
            except trio.BrokenResourceError:  # its reader went away
                sub.close()
