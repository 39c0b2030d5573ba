"""Fan-out of committed events to subscribers, never waiting for any of them.

Each subscriber owns a bounded queue. `publish` puts events in with `put_nowait`; a subscriber
whose queue is full is cut off (`overflowed` is set and its queue closed after what it already
holds), because a client that cannot keep up must not make the daemon wait or grow without
bound. It loses nothing for good: every event is in the log, and `replay` fetches it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

import trio

from dagd.daemon.store import StoredEvent


class Subscriber:
    """One consumer's view of the stream: a bounded queue of events for the DAGs it wants.

    The queue holds StoredEvents put by the hub and whatever else its consumer puts there
    itself (the WebSocket server queues its answers behind the events, so both leave in
    order). `buffer` items at most (0 or less: unbounded).
    """

    def __init__(self, hub: Hub, dag_ids: Iterable[str] | None, buffer: int) -> None:
        self._hub = hub
        self.dag_ids: set[str] | None = None if dag_ids is None else set(dag_ids)
        self.capacity: float = buffer if buffer > 0 else math.inf
        self._items: deque[object] = deque()
        self._readers = trio.lowlevel.ParkingLot()  # tasks waiting in get()
        self.overflowed = False
        self.closed = False
        #: Optional fast path: takes the events this subscriber wants and returns True if it
        #: delivered them itself (the WebSocket server writes straight to an idle socket).
        self.direct: Callable[[list[StoredEvent]], bool] | None = None

    def queued(self) -> int:
        """How many items wait in the queue."""
        return len(self._items)

    def put_nowait(self, item: object) -> None:
        """Queue `item` without waiting. Raises trio.WouldBlock if the queue holds `buffer`
        items already, trio.ClosedResourceError once the subscription is closed."""
        if self.closed:
            raise trio.ClosedResourceError("the subscription is closed")
        items = self._items
        if len(items) >= self.capacity:
            raise trio.WouldBlock
        items.append(item)
        if self._readers:
            self._readers.unpark()

    def get_nowait(self) -> object:
        """The oldest queued item. Raises trio.WouldBlock if none is queued, trio.EndOfChannel
        once the subscription is closed and drained."""
        if self._items:
            return self._items.popleft()
        if self.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def get(self) -> object:
        """The oldest queued item, waiting for one. Raises trio.EndOfChannel once the
        subscription is closed and drained. A checkpoint either way (like trio's channels)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            if self.closed:
                raise trio.EndOfChannel
            await self._readers.park()
        item = self._items.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def wants(self, dag_id: str) -> bool:
        """Does this subscriber get events of `dag_id`?"""
        return self.dag_ids is None or dag_id in self.dag_ids

    def set_dags(self, dag_ids: Iterable[str] | None) -> None:
        """Change the filter: None means every DAG."""
        self.dag_ids = None if dag_ids is None else set(dag_ids)

    def close(self) -> None:
        """End the subscription: no more puts; readers get what is queued, then EndOfChannel."""
        if not self.closed:
            self.closed = True
            self._hub.unsubscribe(self)
            self._readers.unpark_all()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> object:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Hub:
    """The fan-out: `publish` hands each committed batch to every subscriber that wants it,
    never waiting; a subscriber whose queue is full is cut off (see the module docstring)."""

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.dropped_subscribers = 0

    def subscribe(self, dag_ids: Iterable[str] | None = None, buffer: int = 1024) -> Subscriber:
        """A new subscriber for `dag_ids` (None: every DAG) with a queue of `buffer` events."""
        sub = Subscriber(self, dag_ids, buffer)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget `sub` (its close() calls this); nothing is put in its queue any more."""
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
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
                continue
            put = sub.put_nowait
            try:
                for stored in wanted:
                    put(stored)
            except trio.WouldBlock:
                sub.overflowed = True
                self.dropped_subscribers += 1
                sub.close()
            except trio.ClosedResourceError:  # closed by its consumer
                sub.close()
