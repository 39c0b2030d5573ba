"""Pools: named concurrency limits shared by every run (`[pools]` in config.toml), and the
fair queue each one keeps. No I/O, no clock, no trio: dagd/runtime/pools.py waits on it.

A pool has `size` slots. A step in it (`pool = "warehouse"`, `pool_slots = 1`) asks for its
slots before each attempt and gives them back when the attempt ends. Asks are served strictly
in order: by the run's trigger order (`order`: earlier-queued runs first), then by when the
step asked. A request that does not fit waits, and so does every request behind it, even one
that would fit (no step is passed over for ever by smaller ones). A request withdrawn while
it waits (its run was cancelled) takes nothing; it may let the requests behind it through.

Each operation returns the requests it granted, for the caller to wake.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

import attrs


class PoolError(ValueError):
    """A request names a pool that is not configured."""


@attrs.define(eq=False, slots=True)
class PoolRequest:
    """One attempt's ask for `slots` slots of `pool`. `order`: the run's trigger order (any
    comparable number, smaller first: the daemon gives the run's queue time in UNIX seconds).
    `granted` turns True when the slots are the attempt's; `done` once they are given back or
    the request was withdrawn."""

    pool: str
    slots: int
    order: float
    run_id: str
    step_id: str
    granted: bool = False
    done: bool = False
    seq: int = 0  # set by the queue: ties of `order` go by asking order


@attrs.frozen
class PoolUsage:
    """A pool as it is now: `slots` configured, `in_use` by running attempts, and the
    attempts `waiting` for slots (and how many slots they ask for together)."""

    name: str
    slots: int
    in_use: int
    waiting: int
    waiting_slots: int


class PoolQueue:
    """One pool: `size` slots, the slots in use, and the waiting requests in serving order."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.in_use = 0
        # Withdrawn requests stay in the heap, marked done, until they reach its top or
        # outnumber the waiting ones (then the heap is rebuilt without them): withdrawing
        # costs O(log n), not a rebuild each (a cancelled wide fan-out withdraws thousands).
        self._heap: list[tuple[float, int, PoolRequest]] = []
        self._seq = 0
        self._withdrawn = 0  # done entries still in the heap
        self.waiting_slots = 0

    @property
    def waiting(self) -> int:
        """How many requests wait."""
        return len(self._heap) - self._withdrawn

    def ask(self, request: PoolRequest) -> list[PoolRequest]:
        """Queue `request` and grant what now fits, in order (it may be among them). Asks for
        more slots than the pool has are cut down to the pool's size, so they can run."""
        request.slots = max(1, min(request.slots, self.size))
        self._seq += 1
        request.seq = self._seq
        heapq.heappush(self._heap, (request.order, request.seq, request))
        self.waiting_slots += request.slots
        return self._grant()

    def release(self, request: PoolRequest) -> list[PoolRequest]:
        """Give back a request's slots if it holds them, or withdraw it if it still waits;
        then grant what now fits. Nothing happens for a request that is done already."""
        if request.done:
            return []
        request.done = True
        if request.granted:
            self.in_use -= request.slots
        else:
            self._withdrawn += 1
            self.waiting_slots -= request.slots
            if self._withdrawn > len(self._heap) // 2:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._withdrawn = 0
        return self._grant()

    def usage(self) -> PoolUsage:
        """The pool's numbers now."""
        return PoolUsage(self.name, self.size, self.in_use, self.waiting, self.waiting_slots)

    def _grant(self) -> list[PoolRequest]:
        granted = []
        heap = self._heap
        while heap:
            request = heap[0][2]
            if request.done:  # withdrawn while it waited
                heapq.heappop(heap)
                self._withdrawn -= 1
                continue
            if self.in_use + request.slots > self.size:
                break
            heapq.heappop(heap)
            request.granted = True
            self.in_use += request.slots
            self.waiting_slots -= request.slots
            granted.append(request)
        return granted


class PoolTable:
    """Every configured pool by name (`sizes`: name -> slots, `Config.pools`)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.queues = {name: PoolQueue(name, size) for name, size in sizes.items()}

    def ask(self, request: PoolRequest) -> list[PoolRequest]:
        """As `PoolQueue.ask` on the request's pool. Raises PoolError for an unknown pool
        (a run keeps its DAG definition, which may name a pool no longer configured)."""
        queue = self.queues.get(request.pool)
        if queue is None:
            known = ", ".join(sorted(self.queues)) or "none"
            raise PoolError(f"pool {request.pool!r} is not configured (configured: {known})")
        return queue.ask(request)

    def release(self, request: PoolRequest) -> list[PoolRequest]:
        """As `PoolQueue.release` on the request's pool."""
        queue = self.queues.get(request.pool)
        return [] if queue is None else queue.release(request)

    def usage(self) -> list[PoolUsage]:
        """Every pool's numbers, by name."""
        return [self.queues[name].usage() for name in sorted(self.queues)]
