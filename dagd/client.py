"""A reconnecting client for the dagd WebSocket protocol.

    async with dagd.client.connect(url, token=..., dag_ids=["etl"]) as client:
        async for item in client:
            ...                       # DAG events, exactly once and in seq order

What it does for you, after every lost connection: waits (about 1 s, doubling, at most 30 s, full
jitter; reset after a healthy connection), authenticates again, subscribes to the same DAGs, and
replays from the last seq it delivered, de-duplicating by seq. If the daemon no longer has those
events it falls back to a snapshot and says so with a `GapRepaired` item. A lost connection shows
up as a `ConnectionLost` item (the seed's connection-error shape, `code="connection_error"`), a
refused token ends the iteration with `AuthFailed`: retrying a wrong token only hammers the daemon.
No heartbeat (or any message) for 2.5 heartbeat intervals counts as a dead connection.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from dagd.core.backoff import ReconnectBackoff
from dagd.core.events import DagEvent
from dagd.core.exceptiongroups import unwrap_single
from dagd.core.protocol.events import TYPE_TO_EVENT, event_from_wire
from dagd.core.timefmt import iso_z


class ClientError(Exception):
    """The daemon answered a request with an error (`code` is the protocol's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthFailed(ClientError):
    """The daemon refused the token. Final: the client does not retry."""


class NotConnected(ClientError):
    """A request could not be sent because the daemon is unreachable."""


@attrs.frozen
class ConnectionLost:
    """The connection failed or dropped; the client retries in `retry_in` seconds.

    `to_wire()` gives the seed's shape: {"type":"error","code":"connection_error",...}.
    """

    message: str
    timestamp: float
    retry_in: float
    attempt: int
    code: str = "connection_error"

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "error",
            "code": self.code,
            "message": f"{self.message}; retrying in {self.retry_in:.1f}s",
            "timestamp": iso_z(self.timestamp),
        }


@attrs.frozen
class Connected:
    """Authenticated and subscribed (again); `seq` is where the stream continues from."""

    seq: int
    reconnect: bool


@attrs.frozen
class GapRepaired:
    """Events were missed and are no longer in the daemon's log: `events` is a snapshot of the
    current state (events without seq) and the stream continues after `seq`."""

    events: list[DagEvent]
    seq: int


Item = DagEvent | ConnectionLost | Connected | GapRepaired
Opener = Callable[..., Any]


class _Reconnect(Exception):
    """Internal: drop this connection and reconnect."""


_RETRYABLE = (
    _Reconnect,
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    ValueError,
)


class Client:
    """Use through `connect()`. Iterate for events; call `trigger`, `cancel`, ... for control."""

    def __init__(
        self,
        url: str,
        token: str,
        dag_ids: Iterable[str],
        *,
        since: int | None,
        heartbeat_interval: float,
        backoff: ReconnectBackoff,
        buffer: int,
        ssl_context: ssl.SSLContext | None,
        opener: Opener,
        request_timeout: float,
        initial_snapshot: bool = False,
    ) -> None:
        self.initial_snapshot = initial_snapshot
        self.url = url
        self._token = token
        self.dag_ids = list(dag_ids)
        self.last_seq = since
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff
        self.request_timeout = request_timeout
        self._ssl = ssl_context
        self._open = opener
        self._send_items, self._items = trio.open_memory_channel[Item](buffer)
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._pending: dict[str, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self.failure: BaseException | None = None
        self.connections = 0

    # ---------------------------------------------------------------- items

    # Plain iterators, not async generators: leaving an `async for` early (break, return)
    # must not leave a suspended generator behind for the garbage collector to finalize.

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self._items.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None

    def events(self) -> AsyncIterator[DagEvent]:
        """Only the DAG events (with snapshot events after a repaired gap)."""
        return _EventsOnly(self)

    # -------------------------------------------------------------- requests

    async def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its answer (matched by requestId)."""
        with trio.move_on_after(self.request_timeout) as scope:
            await self._connected.wait()
        if scope.cancelled_caught or self._ws is None:
            raise NotConnected("connection_error", f"cannot reach the daemon at {self.url}")
        request_id = f"c{next(self._ids)}"
        done, holder = trio.Event(), []
        self._pending[request_id] = (done, holder)
        try:
            with trio.fail_after(self.request_timeout):
                await self._ws.send_message(json.dumps({**message, "requestId": request_id}))
                await done.wait()
        except (ConnectionClosed, trio.TooSlowError):
            raise NotConnected("connection_error", _DROPPED) from None
        finally:
            self._pending.pop(request_id, None)
        answer = holder[0]
        if answer is _LOST:  # the connection dropped while we waited (see _fail_pending)
            raise NotConnected("connection_error", _DROPPED)
        if answer.get("type") == "error":
            raise ClientError(answer.get("code", "error"), answer.get("message", ""))
        return answer

    async def trigger(self, dag_id: str, params: Mapping[str, Any] | None = None) -> str:
        message = {"type": "trigger", "dagId": dag_id, "params": dict(params or {})}
        answer = await self.request(message)
        return str(answer["runId"])

    async def cancel(self, run_id: str) -> None:
        await self.request({"type": "cancel", "runId": run_id})

    async def retry(self, run_id: str) -> None:
        await self.request({"type": "retry", "runId": run_id})

    async def list_dags(self) -> list[dict[str, Any]]:
        return list((await self.request({"type": "list_dags"}))["dags"])

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        message: dict[str, Any] = {"type": "list_runs", "limit": limit}
        if dag_id is not None:
            message["dagId"] = dag_id
        return list((await self.request(message))["runs"])

    # ------------------------------------------------------------ connection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect until cancelled or the token is refused."""
        task_status.started()
        attempt = 0
        try:
            while True:
                try:
                    await self._session()
                    message = "the daemon closed the connection"
                except Exception as exc:  # classified below; the rest is re-raised
                    leaf = _first_leaf(exc)
                    if isinstance(leaf, AuthFailed):
                        self.failure = leaf
                        return
                    if not isinstance(leaf, _RETRYABLE):
                        raise
                    message = _describe(leaf)
                finally:
                    self._ws = None
                    if self._connected.is_set():  # requests may be waiting on an unset one
                        self._connected = trio.Event()
                    self._fail_pending()
                attempt += 1
                delay = self.backoff.next_delay()
                await self._send_items.send(ConnectionLost(message, time.time(), delay, attempt))
                await trio.sleep(delay)
        finally:
            self._send_items.close()

    def _fail_pending(self) -> None:
        for done, holder in self._pending.values():
            if not holder:
                holder.append(_LOST)
            done.set()

    async def _session(self) -> None:
        opened: list[Any] = []
        try:
            async with self._open(
                self.url,
                ssl_context=self._ssl,
                connect_timeout=5,
                disconnect_timeout=2,
                message_queue_size=256,
                max_message_size=16 * 1024 * 1024,
            ) as ws:
                opened.append(ws)
                await self._talk(ws)
        finally:
            # trio-websocket 0.12 never closes a client's TCP stream when the daemon closed the
            # connection or it dropped (aclose() returns early once a close reason is set):
            # close it here, or every reconnect leaks a socket until garbage collection.
            stream = getattr(opened[0], "_stream", None) if opened else None
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)

    async def _talk(self, ws: WebSocketConnection) -> None:
        """One connection: authenticate, subscribe, catch up, then receive until it fails."""
        await ws.send_message(json.dumps({"type": "auth", "token": self._token}))
        answer = await self._expect(ws, "auth_success")
        subscribe: dict[str, Any] = {"type": "subscribe", "dagIds": self.dag_ids}
        if self.last_seq is not None:
            # Subscribe and replay in one step: the daemon then sends the missed events and
            # the live ones after them in seq order, nothing repeated (docs/protocol.md).
            subscribe["since"] = self.last_seq
        await ws.send_message(json.dumps(subscribe))
        await self._expect(ws, "subscribed")
        reconnect = self.connections > 0
        self.connections += 1
        snapshot = replay = False
        if self.last_seq is None:
            self.last_seq = int(answer["seq"])  # first connection: from now on
            if self.initial_snapshot:
                snapshot = True
                await ws.send_message(json.dumps({"type": "snapshot"}))
        else:
            replay = True
        self._ws = ws
        self._connected.set()
        self.backoff.reset()
        await self._send_items.send(Connected(self.last_seq, reconnect))
        await self._receive(ws, snapshot, replay)

    async def _deliver(self, event: DagEvent) -> None:
        """Pass on an event with a seq we have not delivered yet (de-duplication by seq)."""
        if event.seq is not None and event.seq > (self.last_seq or 0):
            await self._send_items.send(event)
            self.last_seq = event.seq

    async def _deliver_held(self, held: list[DagEvent]) -> None:
        for event in sorted(held, key=lambda e: e.seq or 0):
            await self._deliver(event)

    async def _expect(self, ws: WebSocketConnection, kind: str) -> dict[str, Any]:
        with trio.fail_after(10):
            message = json.loads(await ws.get_message())
        if message.get("type") == kind:
            return message
        if message.get("code") == "auth_failed":
            raise AuthFailed("auth_failed", "the daemon refused the token")
        raise _Reconnect(f"expected {kind}, got {json.dumps(message)[:200]}")

    async def _receive(
        self, ws: WebSocketConnection, snapshot_pending: bool, replay_pending: bool
    ) -> None:
        silence = 2.5 * self.heartbeat_interval
        snapshot: list[DagEvent] | None = [] if snapshot_pending else None
        # Until replay_complete, events are held back and then delivered sorted. With
        # subscribe + since they already arrive in order; holding them also keeps the client
        # right against a daemon that answers a separate `replay` (live events queued before
        # it may overtake replayed ones, docs/protocol.md).
        held: list[DagEvent] | None = [] if replay_pending else None
        while True:
            with trio.move_on_after(silence) as scope:
                text = await ws.get_message()
            if scope.cancelled_caught:
                raise _Reconnect(f"no heartbeat for {silence:g}s")
            message = json.loads(text)
            kind = message.get("type")
            if kind in TYPE_TO_EVENT and "data" in message:
                event = event_from_wire(message)
                if snapshot is not None and event.seq is None:
                    snapshot.append(event)
                elif held is not None:
                    held.append(event)
                else:
                    await self._deliver(event)
            elif kind == "replay_complete" and held is not None:
                await self._deliver_held(held)
                held = None
            elif kind == "snapshot_complete":
                self.last_seq = max(self.last_seq or 0, int(message["seq"]))
                await self._send_items.send(GapRepaired(snapshot or [], self.last_seq))
                snapshot = None
            elif kind == "error" and message.get("code") == "replay_unavailable":
                if held is not None:  # live events only: the replay itself did not happen
                    await self._deliver_held(held)
                    held = None
                snapshot = []
                await ws.send_message(json.dumps({"type": "snapshot"}))
            elif "requestId" in message and message["requestId"] in self._pending:
                done, holder = self._pending[message["requestId"]]
                holder.append(message)
                done.set()
            # heartbeat, replay_complete, pong and the rest only prove the link is alive


class _EventsOnly:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._pending: collections.deque[DagEvent] = collections.deque()

    def __aiter__(self) -> _EventsOnly:
        return self

    async def __anext__(self) -> DagEvent:
        while not self._pending:
            item = await self._client.__anext__()
            if isinstance(item, GapRepaired):
                self._pending.extend(item.events)
            elif not isinstance(item, ConnectionLost | Connected):
                return item
        return self._pending.popleft()


_DROPPED = (
    "the connection dropped before the daemon answered; "
    "the request may or may not have been applied"
)
_LOST: dict[str, Any] = {"type": "error", "code": "connection_error", "message": _DROPPED}


def _first_leaf(exc: BaseException) -> BaseException:
    """trio-websocket may wrap errors in ExceptionGroups: the first real exception inside."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        code = getattr(reason, "code", None)
        text = getattr(reason, "reason", None)
        if code == 1013:
            return "the daemon dropped this client as too slow (it will replay what it missed)"
        if code == 1001:
            return "the daemon is shutting down"
        return f"connection closed ({code}{': ' + text if text else ''})"
    if isinstance(exc, HandshakeError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return f"cannot connect: {cause.strerror or cause}"
        return f"WebSocket handshake failed: {exc or cause}"
    if isinstance(exc, trio.TooSlowError):
        return "the daemon did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def connect(
    url: str,
    token: str,
    dag_ids: Iterable[str] = ("*",),
    *,
    since: int | None = None,
    heartbeat_interval: float = 30.0,
    backoff: ReconnectBackoff | None = None,
    buffer: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
    request_timeout: float = 10.0,
    rng: random.Random | None = None,
    initial_snapshot: bool = False,
    _opener: Opener = open_websocket_url,
) -> AsyncIterator[Client]:
    """Connect to a dagd daemon and keep connected until the block ends.

    `since`: replay from this seq on the first connection too (default: only events from now).
    `initial_snapshot`: start with a GapRepaired item holding the current state of the DAGs.
    """
    client = Client(
        url,
        token,
        dag_ids,
        since=since,
        heartbeat_interval=heartbeat_interval,
        backoff=backoff or ReconnectBackoff(1.0, 30.0, rng),
        buffer=buffer,
        ssl_context=ssl_context,
        opener=_opener,
        request_timeout=request_timeout,
        initial_snapshot=initial_snapshot,
    )
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()


__all__ = [
    "AuthFailed",
    "Client",
    "ClientError",
    "Connected",
    "ConnectionLost",
    "GapRepaired",
    "NotConnected",
    "connect",
]
