"""The composition root: builds the daemon (and, if asked, the network layer) and orders
their shutdown.

Use it from any trio program:

    async with dagd.open_daemon(config) as daemon:
        run_id = await daemon.trigger("etl", {"date": "2024-01-01"})
        async for event in daemon.events(["etl"]):
            ...

`dagd serve` is this plus signal handling and the WebSocket server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from dagd.core.config import Config
from dagd.core.exceptiongroups import unwrap_single
from dagd.daemon.daemon import Daemon
from dagd.net.server import serve


@asynccontextmanager
async def open_daemon(
    config: Config,
    *,
    clock: Callable[[], float] | None = None,
    websocket: bool = False,
) -> AsyncIterator[Daemon]:
    """Run a daemon inside the caller's trio program for the duration of the block.

    With `websocket=True` it also serves the WebSocket protocol on config.server's host/port.
    Leaving the block cancels active runs (killing their processes) and commits every event.
    """
    daemon = Daemon(config, clock=clock or time.time)
    try:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                await daemon.start(nursery)
                if websocket:
                    await nursery.start(serve, daemon)
                try:
                    yield daemon
                finally:
                    with trio.CancelScope(shield=True):
                        await daemon.shutdown()
                    nursery.cancel_scope.cancel()
    finally:
        daemon.store.close()


__all__ = ["open_daemon"]
