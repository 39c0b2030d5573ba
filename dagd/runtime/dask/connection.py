"""The daemon's one Dask client, kept connected in the background.

The client is Dask's synchronous kind: it runs its own event loop in a thread of its own, so
submitting never blocks trio's loop, and completions come back through done-callbacks (no
thread per running step). Making it blocks (up to `connect_timeout` seconds), so it is made in
a worker thread.

- Unreachable at start: one WARNING line, and `Connection.keep` tries again every
  `reconnect_interval` seconds; meanwhile `client` is None and steps fail at once.
- Lost later: Dask's client tries to reconnect by itself for `connect_timeout` seconds and then
  closes; `keep` notices (it looks every `check_interval` seconds), drops it and makes new ones
  until the scheduler is back. Each time a client becomes usable, `on_connected` runs. The
  loss is logged once (WARNING), whether Dask's client or a new one reconnects, and so is the
  return; a connection made after an unreachable start is logged at INFO.

TLS: the `tls_*` paths of `DaskExecutorConfig` make a `distributed.security.Security` with
encryption required (the address must then be `tls://...`).
"""

# mypy: allow-untyped-calls
# (distributed's Client and Security carry no annotations)

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from distributed import Client
from distributed.security import Security

from dagd.core.config import DaskExecutorConfig

log = logging.getLogger("dagd.runtime.dask")


def security(config: DaskExecutorConfig) -> Security | None:
    """Dask's TLS settings from `config`, or None when it names no TLS file."""
    files = (config.tls_ca_file, config.tls_client_cert, config.tls_client_key)
    if not any(files):
        return None
    return Security(
        tls_ca_file=None if config.tls_ca_file is None else str(config.tls_ca_file),
        tls_client_cert=None if config.tls_client_cert is None else str(config.tls_client_cert),
        tls_client_key=None if config.tls_client_key is None else str(config.tls_client_key),
        require_encryption=True,
    )


class Connection:
    """The client to the scheduler at `config.address`, or None while there is none (times
    in seconds)."""

    def __init__(
        self,
        config: DaskExecutorConfig,
        on_connected: Callable[[Client], Awaitable[None]],
        *,
        reconnect_interval: float = 5.0,
        check_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.on_connected = on_connected
        self.reconnect_interval = reconnect_interval
        self.check_interval = check_interval
        self._client: Client | None = None
        self.tried = trio.Event()  # set once the first connection attempt is over
        self._down_logged = False
        # The connect thread is abandoned when keep() is cancelled, so it and keep() meet
        # under this lock: a client the thread makes is either left in `_made` before
        # `_stopped` is set (keep() then closes it) or closed by the thread itself after.
        self._lock = threading.Lock()
        self._stopped = False  # keep() is over: a client made after that is closed at once
        self._made: Client | None = None  # made by the connect thread, not yet taken

    @property
    def address(self) -> str:
        """The scheduler's address, as configured."""
        return self.config.address

    @property
    def client(self) -> Client | None:
        """The client if it is connected now, else None."""
        client = self._client
        return client if client is not None and client.status == "running" else None

    async def usable(self) -> Client | None:
        """`client`, after the first connection attempt is over."""
        await self.tried.wait()
        return self.client

    async def keep(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and keep connected until cancelled; then close the client. Reports
        started at once (the first attempt goes on in the background: `tried`)."""
        task_status.started()
        was_running = False
        lost = False  # a loss was logged and the return not yet
        try:
            while True:
                client = self._client
                status = None if client is None else client.status
                if client is None or status in ("closing", "closed", "failed"):
                    if client is not None:
                        self._client = None
                        if was_running:  # else said when it stopped running
                            log.warning("lost the dask scheduler %s; reconnecting", self.address)
                        await trio.to_thread.run_sync(client.close)
                        # Said here, as a reconnection in time gets "is back" below;
                        # after failed attempts, _connect says "connected" itself.
                        self._down_logged = False
                        lost = True
                    was_running = await self._connect()
                    self.tried.set()
                    if not was_running:
                        lost = False  # "unreachable" is said, then "connected"
                        await trio.sleep(self.reconnect_interval)
                        continue
                    if lost:
                        log.warning("the dask scheduler %s is back", self.address)
                    lost = False
                elif status == "running" and not was_running:
                    log.warning("the dask scheduler %s is back", self.address)
                    was_running = True
                    await self._connected()
                elif status != "running":
                    if was_running:  # Dask's client reconnects by itself meanwhile
                        log.warning("lost the dask scheduler %s; reconnecting", self.address)
                    was_running = False
                await trio.sleep(self.check_interval)
        finally:
            with self._lock:
                self._stopped = True
                made, self._made = self._made, None
            client, self._client = self._client, None
            with trio.CancelScope(shield=True):
                for left in (client, made):
                    if left is not None:
                        await trio.to_thread.run_sync(left.close)

    async def _connect(self) -> bool:
        try:
            # Abandoned on cancel (shutdown need not wait for connect_timeout): what the
            # thread makes is then closed by keep() or by the thread (see `_lock`).
            await trio.to_thread.run_sync(self._make_client, abandon_on_cancel=True)
        except Exception as exc:  # OSError, TimeoutError, a bad address or TLS file
            level = logging.DEBUG if self._down_logged else logging.WARNING
            log.log(
                level,
                'dask scheduler unreachable: %s (%s); steps with executor = "dask" fail '
                "until it is back",
                self.address,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            self._down_logged = True
            return False
        with self._lock:
            client, self._made = self._made, None
        if client is None:  # cannot happen: only keep() takes it, once over
            return False
        self._client = client
        if self._down_logged:
            log.info("connected to the dask scheduler %s", self.address)
        self._down_logged = False
        await self._connected()
        return True

    async def _connected(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            await self.on_connected(client)
        except Exception:
            log.exception("setting up the connection to the dask scheduler %s", self.address)

    def _make_client(self) -> None:
        """In a worker thread: make a client and leave it in `_made`, or close it at once if
        keep() is over (it may have stopped waiting for this thread). Raises what Client
        raises (OSError, TimeoutError, ValueError), or RuntimeError when keep() is over."""
        client = Client(
            self.config.address,
            timeout=self.config.connect_timeout,
            security=security(self.config),
            set_as_default=False,
            name="dagd",
        )
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._made = client
        if stopped:
            client.close()
            raise RuntimeError("dagd's dask executor has stopped")
