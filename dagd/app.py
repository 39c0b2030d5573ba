"""The composition root: builds the daemon (and, if asked, the network layer) and orders
their shutdown.

Use it from any trio program:

    async with dagd.open_daemon(config) as daemon:
        run_id = await daemon.trigger("etl", {"date": "2024-01-01"})
        async for event in daemon.events(["etl"]):
            ...

`open_app` gives the same with the network layer in hand (`app.server`, `app.url`); `dagd
serve` is that plus signal handling.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

from dagd.core.config import Config, ConfigError
from dagd.core.exceptiongroups import unwrap_single
from dagd.daemon.daemon import Daemon
from dagd.daemon.hub import Hub
from dagd.daemon.looplag import probe_loop_lag
from dagd.daemon.statelock import hold_state_dir
from dagd.daemon.stats import DaemonStats
from dagd.daemon.store import StorageUnavailable, Store
from dagd.net.server import Server, serve
from dagd.runtime.executor import executor_registry
from dagd.runtime.local.executor import LocalExecutor

if TYPE_CHECKING:
    from dagd.runtime.executor import StepExecutor


@attrs.frozen
class App:
    """A running dagd: the daemon, and its WebSocket server when one was asked for."""

    daemon: Daemon
    server: Server | None = None

    @property
    def url(self) -> str | None:
        """The WebSocket endpoint, `ws://host:port/api/v1/ws` (`wss://` with TLS), or None
        without a server."""
        return None if self.server is None else self.server.url

    @property
    def http_url(self) -> str | None:
        """The dashboard and plain HTTP routes, `http://host:port/` (`https://` with TLS), or
        None without a server."""
        return None if self.server is None else self.server.http_url


@asynccontextmanager
async def open_app(
    config: Config,
    *,
    clock: Callable[[], float] | None = None,
    websocket: bool = False,
) -> AsyncIterator[App]:
    """Run dagd inside the caller's trio program for the duration of the block.

    Builds the daemon's collaborators (the store on config.db_path, the hub, the local
    executor, and the Dask one when config.dask is set: docs/dask.md) and hands them in;
    `clock` is the wall clock in UNIX seconds (default `time.time`). With `websocket=True` it
    also serves the WebSocket protocol on config.server's host/port (`app.server`,
    `app.url`). Leaving the block cancels active runs (killing their processes) and commits
    every event (see `shut_down`).

    The state folder (config.state_dir) is this block's alone: it holds an OS lock on
    `<state_dir>/dagd.lock` from before the store opens until the block is left (the kernel
    drops it if the process dies). Raises `StateDirInUse` (dagd.StateDirInUse), before reading
    or writing anything, if another process or another `open_app` of this one holds that
    folder; its message is one line, `another dagd (pid 1234) is using <state_dir>; stop it
    first`. Raises `StateDirError` (its base) if the lock file cannot be made or locked (a
    read-only folder, a filesystem without locks).

    Raises `dagd.daemon.store.StateFileError` (a `sqlite3.DatabaseError`, one line naming
    the file and what to do) for a state file that is not dagd's, is damaged or truncated, is
    newer than this dagd or cannot be written, and OSError if the WebSocket address cannot be
    bound. While running, a state file that cannot be written does not stop it
    (docs/protocol.md, *When the disk fails*).
    """
    # First of all: a second process on this state folder is refused before it reads or
    # writes anything (recovery would otherwise kill the live daemon's steps). Released last:
    # the folder is free once everything is on disk.
    with hold_state_dir(config.state_dir):
        hub = Hub()
        stats = DaemonStats()  # counted by the store as it commits; read by /metrics
        store = Store.open(config.db_path, on_commit=hub.publish, stats=stats)
        try:
            with unwrap_single():
                async with open_executors(config) as executors, trio.open_nursery() as nursery:
                    # The daemon records each attempt's leftover handle itself
                    # (recovery.LeftoverRecorder).
                    daemon = Daemon(
                        config, store=store, hub=hub, executors=executors, clock=clock or time.time
                    )
                    await nursery.start(store.writer)
                    await nursery.start(store.checkpointer)
                    await nursery.start(probe_loop_lag, stats)
                    await daemon.start(nursery)
                    server: Server | None = None
                    if websocket:
                        server = await nursery.start(serve, daemon, config)
                    try:
                        yield App(daemon, server)
                    finally:
                        # Shutdown order: stop runs, flush the store, close the network (the
                        # last events delivered, then 1001), close the hub.
                        with trio.CancelScope(shield=True):
                            closers = [server.close_all] if server is not None else []
                            await shut_down(daemon, store, hub, closers)
                        nursery.cancel_scope.cancel()  # the store's writer commits what is left
        finally:
            store.close()


@asynccontextmanager
async def open_executors(config: Config) -> AsyncIterator[dict[str, StepExecutor]]:
    """The executors config.toml asks for, by name, serving for the duration of the block:
    "local" always, and "dask" when config.toml has `[executors.dask]` (docs/dask.md). The
    Dask one connects in the background, so an unreachable scheduler holds up nothing: its
    steps wait for the first attempt to connect (at most `connect_timeout` seconds), then fail
    until it is back. Used by the daemon and by `dagd run` alike.

    Raises ConfigError when `[executors.dask]` is set and the `dask` extra is not installed.
    """
    local = LocalExecutor(
        log_dir=config.log_dir, grace=config.kill_grace, hidden_env=config.secret_env_names
    )
    if config.dask is None:
        yield executor_registry(local)
        return
    try:
        from dagd.runtime.dask.executor import open_dask_executor
    except ImportError as exc:
        raise ConfigError(
            f"[executors.dask] needs Dask distributed ({exc}): pip install 'dagd[dask]'"
        ) from None
    options = {"log_dir": config.log_dir, "grace": config.kill_grace}
    async with open_dask_executor(config.dask, **options) as dask:
        yield executor_registry(local, dask)


@asynccontextmanager
async def open_daemon(
    config: Config,
    *,
    clock: Callable[[], float] | None = None,
    websocket: bool = False,
) -> AsyncIterator[Daemon]:
    """`open_app`, yielding just the daemon: what an embedding program talks to (trigger,
    cancel, retry, events, queries). Same arguments, behaviour and errors as `open_app`; in
    particular it raises `dagd.StateDirInUse` at once, having touched nothing, while another
    process (or another `open_daemon` in this one) uses the same state_dir."""
    async with open_app(config, clock=clock, websocket=websocket) as app:
        yield app.daemon


async def shut_down(
    daemon: Daemon,
    store: Store,
    hub: Hub,
    close_network: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """The shutdown order: stop the runs (queued ones cancelled, running ones' steps killed
    after config.kill_grace seconds), commit every event, close the network (it delivers what
    is committed, then closes its connections), end every subscription. The caller then
    cancels the nursery and closes the store."""
    await daemon.stop()
    # Writes failing: the writer tries once more as it stops, and logs what it loses.
    with contextlib.suppress(StorageUnavailable):
        await store.flush()
    for close in close_network:
        await close()
    hub.close_all()


__all__ = ["App", "open_app", "open_daemon", "shut_down"]
