"""The pools of one process (`[pools]` in config.toml), shared by every run it drives: the
trio side of dagd/core/pools.py's fair queues. One `Pools` per daemon (or per `dagd run`);
each attempt of a step with a `pool` waits here for its slots and gives them back when it
ends, whatever way it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio

from dagd.core.pools import PoolRequest, PoolTable, PoolUsage


class Pools:
    """Named concurrency limits: `sizes` maps a pool's name to its slots (`Config.pools`)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.table = PoolTable(sizes)
        self._wakes: dict[PoolRequest, trio.Event] = {}

    def usage(self) -> list[PoolUsage]:
        """Every pool's slots, slots in use and waiting attempts, by name."""
        return self.table.usage()

    def ask(self, request: PoolRequest) -> bool:
        """Queue `request`; True if it holds its slots at once. Raises PoolError (dagd/core/
        pools.py) for a pool that is not configured."""
        self._wake(self.table.ask(request))
        return request.granted

    async def wait(self, request: PoolRequest, on_wait: Callable[[], None]) -> None:
        """Wait until a request `ask` did not grant at once holds its slots; `on_wait` is
        called first (the step says it waits). Cancelled while it waits, the request is
        withdrawn (or, granted at that moment, its slots are given back): it takes nothing."""
        if request.granted:
            return
        event = self._wakes[request] = trio.Event()
        on_wait()
        try:
            await event.wait()
        except BaseException:
            self.release(request)
            raise
        finally:
            self._wakes.pop(request, None)

    def release(self, request: PoolRequest) -> None:
        """Give a request's slots back (or withdraw it) and wake the requests that now fit.
        Calling it again does nothing."""
        self._wake(self.table.release(request))

    def _wake(self, granted: list[PoolRequest]) -> None:
        for request in granted:
            event = self._wakes.get(request)
            if event is not None:
                event.set()
