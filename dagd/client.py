"""A reconnecting client for the dagd WebSocket protocol.

    async with dagd.client.connect(url, token=..., dag_ids=["etl"]) as client:
        async for item in client:
            ...                       # DAG events, exactly once and in seq order

What it does for you, after every lost connection: waits (about 1 s, doubling, at most 30 s, full
jitter; reset after a healthy connection), authenticates again, subscribes to the same DAGs, and
replays from the last seq it delivered, de-duplicating by seq. If the daemon no longer has those
events (`replay_unavailable`), or the last seq is beyond the daemon's newest event so it comes
from another event log (`replay_ahead`: a restored backup, a new state folder), it falls back to
a snapshot and says so with a `GapRepaired` item; after `replay_ahead` the stream continues from
the snapshot's seq, smaller than the old cursor. A lost connection shows
up as a `ConnectionLost` item (in the protocol's error shape, `code="connection_error"`), a
refused token ends the iteration with `AuthFailed`: retrying a wrong token only hammers the daemon.
No heartbeat (or any message) for 2.5 heartbeat intervals counts as a dead connection.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from dagd.core.backoff import ReconnectBackoff
from dagd.core.events import DagEvent
from dagd.core.exceptiongroups import unwrap_single
from dagd.core.logslice import LogStream
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    Answer,
    AuthSuccess,
    BackfillResult,
    CancelAccepted,
    DagDetail,
    DagList,
    DagSummary,
    Error,
    LogChunk,
    LogEnd,
    LogFollowing,
    Paused,
    PoolList,
    ReplayComplete,
    RetryAccepted,
    RunDetail,
    RunList,
    ServerAnswer,
    SnapshotComplete,
    Subscribed,
    Triggered,
    Unpaused,
)
from dagd.core.protocol.codec import encode, parse_client_message, parse_server_message, to_wire
from dagd.core.protocol.codes import CloseCode, ErrorCode, ProtocolError
from dagd.core.protocol.pairs import ANSWER_TO
from dagd.core.protocol.requests import (
    Auth,
    Backfill,
    Cancel,
    FollowLog,
    GetDag,
    GetRun,
    ListDags,
    ListPools,
    ListRuns,
    Pause,
    Request,
    Retry,
    Snapshot,
    Subscribe,
    Trigger,
    UnfollowLog,
    Unpause,
)
from dagd.core.protocol.wire import dumps
from dagd.core.records import RunRecord
from dagd.core.text import one_line


class ClientError(Exception):
    """The daemon answered a request with an error: `code` is its `ErrorCode` (docs/protocol.md
    lists them), `message` the daemon's explanation."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code)
        super().__init__(f"{self.code}: {message}")
        self.message = message


class AuthFailed(ClientError):
    """The daemon refused the token. Final: the client does not retry."""


class NotConnected(ClientError):
    """A request could not be sent, or its answer not received, because the daemon is
    unreachable or the connection dropped (`code` is `connection_error`)."""


@attrs.frozen
class ConnectionLost:
    """The connection failed or dropped; the client retries in `retry_in` seconds.

    `timestamp` is UNIX seconds; `attempt` counts failed attempts since the last healthy
    connection; `http_status` is the HTTP status with which the server refused the WebSocket
    handshake (404: the URL's path is not dagd's), None when it did not answer with one.
    `to_wire()` gives the protocol's error shape with code `connection_error`.
    """

    message: str
    timestamp: float
    retry_in: float
    attempt: int
    code: ErrorCode = ErrorCode.CONNECTION_ERROR
    http_status: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """`{"type": "error", "code": "connection_error", "message": ..., "timestamp": ...}`
        (the message ends with the retry delay; the timestamp is ISO 8601 UTC)."""
        message = f"{self.message}; retrying in {self.retry_in:.1f}s"
        return to_wire(Error(self.code, message, self.timestamp))


@attrs.frozen
class Connected:
    """Authenticated and subscribed (again); `seq` is where the stream continues from."""

    seq: int
    reconnect: bool


@attrs.frozen
class GapRepaired:
    """Events were missed and are no longer in the daemon's log, or the client's cursor came
    from another event log (the daemon answered `replay_ahead`): `events` is a snapshot of the
    current state (events without seq) and the stream continues after `seq` (which, after
    `replay_ahead`, is smaller than the seqs delivered before)."""

    events: list[DagEvent]
    seq: int


Item = DagEvent | ConnectionLost | Connected | GapRepaired
Opener = Callable[..., Any]


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 5.0,
    disconnect_timeout: float = 2.0,
    message_queue_size: int = 256,
    max_message_size: int = 16 * 1024 * 1024,
) -> AsyncIterator[WebSocketConnection]:
    """One WebSocket connection to `url` (ws:// or wss://) for the duration of the block.

    The client opens the TCP (or TLS) stream itself, hands it to trio-websocket with the
    public `wrap_client_stream`, and closes it itself at the end: trio-websocket never closes a
    client's stream once the daemon closed the connection or it dropped. `connect_timeout` and
    `disconnect_timeout` are seconds; `max_message_size` counts characters (trio-websocket's
    rule). Raises ConnectionTimeout (a HandshakeError) when connecting takes longer,
    HandshakeError from the OSError when the TCP connection fails, ConnectionRejected when the
    daemon refuses the handshake (its HTTP status), ValueError for a URL that is not ws(s)://.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # The Host header carries the port unless it is the scheme's default (RFC 6455 4.1).
    host_header = host if port == (443 if secure else 80) else f"{host}:{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
    try:
        with trio.fail_after(connect_timeout):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise HandshakeError from exc
            if secure:
                context = ssl_context or ssl.create_default_context()
                stream = trio.SSLStream(
                    stream, context, server_hostname=host, https_compatible=True
                )
    except trio.TooSlowError:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise ConnectionTimeout from None
    assert stream is not None
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        message_queue_size=message_queue_size,
                        max_message_size=max_message_size,
                    )
            except trio.TooSlowError:
                raise ConnectionTimeout from None
            except OSError as exc:  # the TLS handshake, or the peer hung up
                raise HandshakeError from exc
            try:
                yield ws
            finally:
                with trio.move_on_after(disconnect_timeout):
                    await ws.aclose()
                nursery.cancel_scope.cancel()  # trio-websocket's reader task
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


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
    """Use through `connect()`. Iterate for events; call `trigger`, `cancel`, `retry`, `pause`,
    `unpause`, `backfill` for control, and `list_dags`, `list_runs`, `get_run`, `get_dag` to
    ask."""

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
        # requestId -> (set when answered or lost, [the answer; None: the connection dropped])
        self._pending: dict[str, tuple[trio.Event, list[Answer | None]]] = {}
        self._ids = itertools.count(1)
        # requestId -> called with the answer in the receiving task, before any later message
        self._on_answer: dict[str, Callable[[Answer], None]] = {}
        self._follows: dict[_FollowKey, LogFollower] = {}  # followed logs, by their key
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

    async def request(self, message: Request | Mapping[str, Any]) -> Answer:
        """Send one request and wait for its answer, matched by `requestId`.

        `message` is a request object (`dagd.core.protocol.requests`: `Trigger("etl")`, ...) or
        its wire dict (`{"type": "trigger", "dagId": "etl"}`); the client sets its own
        `requestId`. Returns the answer object that `dagd.core.protocol.pairs.ANSWER_TO` pairs
        with the request (`Triggered` for `Trigger`, ...). Waits at most `request_timeout`
        seconds for a connection and as long again for the answer.

        Raises `NotConnected` (code `connection_error`) when the daemon cannot be reached in
        time or the connection drops before the answer (the request may or may not have been
        applied), and `ClientError` with the daemon's code for an error answer:
        `invalid_message` (also for a malformed `message` dict, which is never sent),
        `forbidden`, `unknown_dag`, `invalid_params`, `unknown_run`, `not_running`,
        `not_finished`, `not_retryable`, `shutting_down`, `storage_unavailable`,
        `no_schedule`, `invalid_range`, `rate_limited`.
        """
        request = message if not isinstance(message, Mapping) else _request_of(message)
        return await self._request(request)

    async def _request(
        self, request: Request, on_answer: Callable[[Answer], None] | None = None
    ) -> Answer:
        """`request` as `request()` says; `on_answer` is called with a successful answer by
        the receiving task itself, before it reads the next message."""
        with trio.move_on_after(self.request_timeout) as scope:
            await self._connected.wait()
        if scope.cancelled_caught or self._ws is None:
            raise NotConnected(ErrorCode.CONNECTION_ERROR, f"cannot reach the daemon at {self.url}")
        request_id = f"c{next(self._ids)}"
        done, holder = trio.Event(), list[Answer | None]()
        self._pending[request_id] = (done, holder)
        if on_answer is not None:
            self._on_answer[request_id] = on_answer
        try:
            with trio.fail_after(self.request_timeout):
                await self._ws.send_message(encode(attrs.evolve(request, request_id=request_id)))
                await done.wait()
        except (ConnectionClosed, trio.TooSlowError):
            raise NotConnected(ErrorCode.CONNECTION_ERROR, _DROPPED) from None
        finally:
            self._pending.pop(request_id, None)
            self._on_answer.pop(request_id, None)
        answer = holder[0]
        if answer is None:  # the connection dropped while we waited (see _fail_pending)
            raise NotConnected(ErrorCode.CONNECTION_ERROR, _DROPPED)
        if isinstance(answer, Error):
            raise ClientError(answer.code, answer.message)
        expected = ANSWER_TO[type(request)]
        if not isinstance(answer, expected):
            raise ClientError(
                ErrorCode.INVALID_MESSAGE,
                f"the daemon answered {type(request).__name__} with {type(answer).__name__}",
            )
        return answer

    async def _ask(self, request: Request, expected: type[A]) -> A:
        answer = await self.request(request)
        assert isinstance(answer, expected)  # request() checked it against ANSWER_TO
        return answer

    async def trigger(self, dag_id: str, params: Mapping[str, Any] | None = None) -> str:
        """Start a run of `dag_id` with `params` (name -> string, number or boolean; only params
        the DAG declares). Returns the new run id (`manual__<trigger time>`) once the daemon
        stored the run as queued; its events follow on the stream.

        Raises `ClientError` `unknown_dag`, `invalid_params`, `forbidden` (a read token),
        `shutting_down`, `storage_unavailable` (the daemon cannot write its state file just
        now), `invalid_message`; `NotConnected` (see `request`).
        """
        answer = await self._ask(Trigger(dag_id, dict(params or {})), Triggered)
        return answer.run_id

    async def cancel(self, run_id: str) -> None:
        """Cancel a queued or running run; returns once the daemon accepted it (the run's
        `cancelled` events follow on the stream).

        Raises `ClientError` `unknown_run`, `not_running` (it already finished), `forbidden`;
        `NotConnected` (see `request`).
        """
        await self._ask(Cancel(run_id), CancelAccepted)

    async def retry(self, run_id: str) -> None:
        """Rerun a failed or cancelled run with the same id (successful steps are kept);
        returns once the daemon stored it as queued again.

        Raises `ClientError` `unknown_run`, `not_finished` (still queued or running),
        `not_retryable` (it succeeded), `unknown_dag` (its DAG is no longer loaded),
        `shutting_down`, `storage_unavailable`, `forbidden`; `NotConnected`.
        """
        await self._ask(Retry(run_id), RetryAccepted)

    async def list_dags(self) -> list[DagSummary]:
        """Every DAG the daemon has loaded: id, description, schedule, next run (UNIX seconds
        or None), step ids, tags and declared params (name -> default text).

        Raises `NotConnected` (see `request`).
        """
        return (await self._ask(ListDags(), DagList)).dags

    async def list_pools(self) -> list[PoolUsage]:
        """Every pool of the daemon's config.toml, by name: its slots, the slots in use and
        the attempts waiting for slots (`PoolUsage`, dagd/core/pools.py).

        Raises `NotConnected` (see `request`).
        """
        return (await self._ask(ListPools(), PoolList)).pools

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest `limit` runs (1..1000), of `dag_id` or of every DAG, newest first: run id,
        status, params, and queued/started/ended times (UNIX seconds; None until then).

        Raises `ClientError` `unknown_dag` (a `dag_id` that is neither loaded nor has any run),
        `invalid_message` (a limit out of range); `NotConnected`.
        """
        return (await self._ask(ListRuns(dag_id, limit), RunList)).runs

    async def get_run(self, run_id: str) -> RunDetail:
        """One run in detail: its record, trigger kind, duration (ms), definition version, and
        every step of its definition with its latest status, timings, error and attempts
        (docs/protocol.md, `get_run`). A run in progress is as the daemon sees it now.

        Raises `ClientError` `unknown_run`; `NotConnected` (see `request`).
        """
        return await self._ask(GetRun(run_id), RunDetail)

    async def get_dag(self, dag_id: str) -> DagDetail:
        """One loaded DAG in detail: its summary (as in `list_dags`), run settings, every
        step's definition (command or callable, upstreams, executor, retries, timeout, trigger
        rule, graph level) and its edges.

        Raises `ClientError` `unknown_dag`; `NotConnected` (see `request`).
        """
        return await self._ask(GetDag(dag_id), DagDetail)

    async def pause(self, dag_id: str) -> Paused:
        """Stop `dag_id`'s schedule from firing (manual triggers and backfills still run); the
        daemon keeps it across restarts. Pausing a paused DAG is no error.

        Raises `ClientError` `unknown_dag`, `forbidden` (a read token),
        `storage_unavailable`; `NotConnected` (see `request`).
        """
        return await self._ask(Pause(dag_id), Paused)

    async def unpause(self, dag_id: str) -> Unpaused:
        """Let `dag_id`'s schedule fire again; its `catchup` decides whether the slots missed
        while paused run (all of them, oldest first) or only the latest one. The answer has
        the next slot (UNIX seconds; None without schedule).

        Raises `ClientError` `unknown_dag`, `forbidden`, `storage_unavailable`;
        `NotConnected` (see `request`).
        """
        return await self._ask(Unpause(dag_id), Unpaused)

    async def backfill(
        self,
        dag_id: str,
        start: str,
        end: str,
        params: Mapping[str, Any] | None = None,
        *,
        rerun: bool = False,
        dry_run: bool = False,
    ) -> BackfillResult:
        """Run `dag_id` for every schedule slot from `start` to `end` (ISO 8601 dates or date
        and times, in the DAG's time zone unless they carry an offset; a date as `end` counts
        its whole day), oldest first, each under the id the scheduler gives that slot. Slots
        whose run succeeded are skipped unless `rerun`; failed or cancelled ones are retried.
        With `dry_run` nothing is queued. The answer lists every slot with its run id and what
        was done (`queued`, `retried`, `rerun`, `skipped` with a reason).

        Raises `ClientError` `unknown_dag`, `no_schedule` (the DAG has none),
        `invalid_range` (unreadable times, `end` before `start`, or more slots than
        `dagd.core.protocol.requests.MAX_BACKFILL_SLOTS`), `invalid_params`, `forbidden`,
        `shutting_down`, `storage_unavailable`; `NotConnected` (see `request`).
        """
        request = Backfill(dag_id, start, end, dict(params or {}), rerun=rerun, dry_run=dry_run)
        return await self._ask(request, BackfillResult)

    def follow_log(
        self,
        run_id: str,
        step_id: str,
        attempt: int | None = None,
        *,
        stream: LogStream = "out",
        offset: int = 0,
        tail: int | None = None,
    ) -> LogFollower:
        """Follow one attempt's log (`stream` "out": stdout, "err": stderr) from byte
        `offset`, live while the attempt runs: an async iterator of `LogChunk`s (`.text`,
        `.offset`, `.next_offset` in bytes of the raw file) that ends once the attempt is over
        and every byte was delivered (then `.end` is the daemon's `LogEnd`: `reason`
        `complete`, or `deleted` when history retention deleted the run meanwhile, or
        `unreadable`). `attempt` None: the latest (`.attempt` says which, after the first
        chunk or end). `tail` (bytes), instead of `offset`: start that many bytes before the
        log's end as it is now.

        It survives reconnects: after a lost connection it follows again from the byte after
        the last chunk delivered, so nothing is missed or repeated. A consumer slower than the
        daemon costs at most 16 chunks of memory (about 1 MiB): the daemon is told to stop
        and the log is followed again from where the consumer is once it catches up. Leave
        early with `await follower.aclose()` (or `async with`) to stop the daemon's sending.

        Raises (from the first `__anext__`) `ClientError` `unknown_run`, `unknown_step`,
        `unknown_attempt` (that attempt was not made; without `attempt`: the step has not
        started), `too_many_follows` (8 logs at once per connection), `log_unreadable`,
        `invalid_message` (this log is followed already by this client).
        """
        return LogFollower(self, run_id, step_id, attempt, stream, offset, tail)

    async def _connection(self) -> None:
        """Wait for the next connection (the client keeps reconnecting); raises the
        client's final failure (AuthFailed) if it gave up."""
        while self._ws is None:
            if self.failure is not None:
                raise self.failure
            with trio.move_on_after(1.0):
                await self._connected.wait()

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
                    status = None
                except Exception as exc:  # classified below; the rest is re-raised
                    leaf = _first_leaf(exc)
                    if isinstance(leaf, AuthFailed):
                        self.failure = leaf
                        return
                    if not isinstance(leaf, _RETRYABLE):
                        raise
                    message = _describe(leaf)
                    status = leaf.status_code if isinstance(leaf, ConnectionRejected) else None
                except BaseExceptionGroup as group:
                    # Cancelled while the connection failed too (the daemon closed it as the
                    # caller left): the cancellation wins, the lost connection is moot.
                    cancelled, _ = group.split(trio.Cancelled)
                    if cancelled is None:
                        raise
                    raise cancelled from None
                finally:
                    self._ws = None
                    if self._connected.is_set():  # requests may be waiting on an unset one
                        self._connected = trio.Event()
                    self._fail_pending()
                attempt += 1
                delay = self.backoff.next_delay()
                lost = ConnectionLost(message, time.time(), delay, attempt, http_status=status)
                await self._send_items.send(lost)
                await trio.sleep(delay)
        finally:
            self._send_items.close()

    def _fail_pending(self) -> None:
        for done, holder in self._pending.values():
            if not holder:
                holder.append(None)  # lost: request() raises NotConnected
            done.set()
        follows, self._follows = self._follows, {}
        for follower in follows.values():
            follower._lost()  # the daemon forgot them with the connection

    async def _session(self) -> None:
        async with self._open(
            self.url,
            ssl_context=self._ssl,
            connect_timeout=5,
            disconnect_timeout=2,
            message_queue_size=256,
            max_message_size=16 * 1024 * 1024,
        ) as ws:
            await self._talk(ws)

    async def _talk(self, ws: WebSocketConnection) -> None:
        """One connection: authenticate, subscribe, catch up, then receive until it fails."""
        await ws.send_message(encode(Auth(self._token)))
        welcome = await self._expect(ws, AuthSuccess)
        # Subscribe and replay in one step (since = the last delivered seq): the daemon then
        # sends the missed events and the live ones after them in seq order, nothing
        # repeated (docs/protocol.md).
        if self.dag_ids:  # the daemon refuses an empty subscription; none is needed then
            await ws.send_message(encode(Subscribe(self.dag_ids, since=self.last_seq)))
            await self._expect(ws, Subscribed)
        reconnect = self.connections > 0
        self.connections += 1
        snapshot = replay = False
        if self.last_seq is None:
            self.last_seq = welcome.seq  # first connection: from now on
            if self.initial_snapshot:
                snapshot = True
                await ws.send_message(encode(Snapshot()))
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

    async def _expect(self, ws: WebSocketConnection, kind: type[A]) -> A:
        with trio.fail_after(10):
            text = await ws.get_message()
        message = _parse(text)
        if isinstance(message, kind):
            return message
        if isinstance(message, Error) and message.code is ErrorCode.AUTH_FAILED:
            raise AuthFailed(ErrorCode.AUTH_FAILED, "the daemon refused the token")
        raise _Reconnect(f"expected {kind.__name__}, got {str(text)[:200]}")

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
            message = _parse(text)
            if isinstance(message, DagEvent):
                if snapshot is not None and message.seq is None:
                    snapshot.append(message)
                elif held is not None:
                    held.append(message)
                else:
                    await self._deliver(message)
            elif isinstance(message, ReplayComplete) and held is not None:
                await self._deliver_held(held)
                held = None
            elif isinstance(message, SnapshotComplete):
                self.last_seq = max(self.last_seq or 0, message.seq)
                await self._send_items.send(GapRepaired(snapshot or [], self.last_seq))
                snapshot = None
            elif isinstance(message, Error) and message.code in _SNAPSHOT_INSTEAD:
                if message.code is ErrorCode.REPLAY_AHEAD:
                    # Our cursor is from another event log (a restored backup, a new state
                    # folder): its seqs say nothing about this one, and de-duplicating this
                    # log's events against it would drop them. Start over from this log.
                    self.last_seq = 0
                if held is not None:  # live events only: the replay itself did not happen
                    await self._deliver_held(held)
                    held = None
                snapshot = []
                await ws.send_message(encode(Snapshot()))
            elif isinstance(message, LogChunk | LogEnd):
                await self._route_log(ws, message)
            elif (
                isinstance(message, Answer)
                and isinstance(message.request_id, str)
                and message.request_id in self._pending
            ):
                done, holder = self._pending[message.request_id]
                hook = self._on_answer.pop(message.request_id, None)
                if hook is not None and not isinstance(message, Error):
                    hook(message)
                holder.append(message)
                done.set()
            # heartbeat, replay_complete, pong, unknown types and the rest only prove the
            # link is alive

    async def _route_log(self, ws: WebSocketConnection, message: LogChunk | LogEnd) -> None:
        """Hand a followed log's message to its follower, never waiting for it: a follower
        whose consumer lags is unfollowed (it follows again from its offset later)."""
        key = (message.run_id, message.step_id, message.attempt, message.stream)
        follower = self._follows.get(key)
        if follower is None:
            return  # unfollowed meanwhile
        if isinstance(message, LogEnd):
            del self._follows[key]
        if not follower._push(message):
            del self._follows[key]
            follower._lost()
            await ws.send_message(encode(UnfollowLog(*key)))


_FollowKey = tuple[str, str, int, str]
#: Chunks a follower holds for its consumer before the daemon is asked to stop.
FOLLOW_BUFFER = 16


class LogFollower:
    """A followed log (`Client.follow_log`): iterate for `LogChunk`s, in byte order."""

    def __init__(
        self,
        client: Client,
        run_id: str,
        step_id: str,
        attempt: int | None,
        stream: LogStream,
        offset: int,
        tail: int | None = None,
    ) -> None:
        self._client = client
        self._tail = tail  # for the first follow only: then `offset` is known
        self.run_id = run_id
        self.step_id = step_id
        self.attempt = attempt  # None until the daemon named the latest
        self.stream: LogStream = stream
        self.offset = offset  # the next byte to deliver
        self.end: LogEnd | None = None
        self._items: collections.deque[LogChunk | LogEnd | None] = collections.deque()
        self._wake = trio.Event()
        self._following = False  # the daemon is sending (to this client) right now
        self._closed = False  # aclose() was called

    # ---- fed by the client's receiving task

    def _bind(self, answer: Answer) -> None:
        assert isinstance(answer, LogFollowing)
        self.attempt = answer.attempt
        self.offset, self._tail = answer.offset, None
        self._following = True
        key = (self.run_id, self.step_id, answer.attempt, self.stream)
        self._client._follows[key] = self

    def _push(self, message: LogChunk | LogEnd) -> bool:
        if isinstance(message, LogChunk) and len(self._items) >= FOLLOW_BUFFER:
            return False
        self._items.append(message)
        self._wake.set()
        return True

    def _lost(self) -> None:
        """The daemon no longer sends this log: follow again once the consumer gets here."""
        self._items.append(None)
        self._wake.set()

    # ---- the consumer's side

    def __aiter__(self) -> LogFollower:
        return self

    async def __anext__(self) -> LogChunk:
        while self.end is None and not self._closed:
            if not self._following and not self._items:
                await self._follow()
                continue
            while not self._items:
                self._wake = trio.Event()
                await self._wake.wait()
            item = self._items.popleft()
            if item is None:
                self._following = False
            elif isinstance(item, LogEnd):
                self.end = item
            elif item.next_offset <= self.offset:
                continue  # sent again after a re-follow: delivered already
            elif item.offset != self.offset:  # never from a well-behaved daemon
                await self._stop()
            else:
                self.offset = item.next_offset
                return item
        raise StopAsyncIteration

    async def _follow(self) -> None:
        while True:
            request = FollowLog(
                self.run_id, self.step_id, self.attempt, self.stream, self.offset, self._tail
            )
            await self._client._connection()
            try:
                await self._client._request(request, on_answer=self._bind)
                return
            except NotConnected:
                continue  # the client reconnects; follow again then

    async def _stop(self) -> None:
        if self.attempt is None or not self._following:
            return
        key = (self.run_id, self.step_id, self.attempt, self.stream)
        if self._client._follows.get(key) is self:
            del self._client._follows[key]
        self._following = False
        self._items.clear()
        with contextlib.suppress(ClientError):
            await self._client._request(UnfollowLog(*key))

    async def aclose(self) -> None:
        """Stop following (the daemon stops sending); iteration then ends."""
        self._closed = True
        await self._stop()

    async def __aenter__(self) -> LogFollower:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


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


#: Replay errors after which the client asks for a snapshot and reports a GapRepaired item.
_SNAPSHOT_INSTEAD = frozenset({ErrorCode.REPLAY_UNAVAILABLE, ErrorCode.REPLAY_AHEAD})

_DROPPED = (
    "the connection dropped before the daemon answered; "
    "the request may or may not have been applied"
)
A = TypeVar("A", bound=ServerAnswer)


def _parse(text: str | bytes) -> ServerAnswer | DagEvent | None:
    """A frame from the daemon as an answer or event; None for a type this client does not
    know (a newer daemon's: it only proves the link is alive). Raises ValueError for a frame
    that is not a valid server message (the client then reconnects)."""
    try:
        return parse_server_message(text)
    except ProtocolError:
        return None


def _request_of(message: Mapping[str, Any]) -> Request:
    """A request given as its wire dict, checked as strictly as the daemon would."""
    try:
        return parse_client_message(dumps(dict(message)))
    except ProtocolError as exc:
        raise ClientError(exc.code, exc.message) from None
    except TypeError as exc:  # a value JSON cannot hold
        raise ClientError(ErrorCode.INVALID_MESSAGE, str(exc)) from None


def _first_leaf(exc: BaseException) -> BaseException:
    """trio-websocket may wrap errors in ExceptionGroups: the first real exception inside."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError among `exc`'s causes (trio wraps it in BrokenResourceError), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        code = getattr(reason, "code", None)
        text = getattr(reason, "reason", None)
        if code == CloseCode.TRY_AGAIN:
            return "the daemon dropped this client as too slow (it will replay what it missed)"
        if code == CloseCode.GOING_AWAY:
            return "the daemon is shutting down"
        return f"connection closed ({code}{': ' + text if text else ''})"
    if isinstance(exc, ConnectionRejected):
        # Whatever answered may be another web server with a whole HTML page: one line of it,
        # about 100 characters, is enough to recognise it.
        body = one_line((exc.body or b"").decode("utf-8", "replace").strip())
        if len(body) > 100:
            body = body[:100] + "..."
        return f"the server refused the WebSocket handshake with HTTP {exc.status_code}" + (
            f": {body}" if body else ""
        )
    tls = _tls_error(exc)
    if tls is not None:
        return f"the TLS handshake failed: {tls.reason or tls}"
    if isinstance(exc, ConnectionTimeout):
        return "no answer to the handshake in time"
    if isinstance(exc, HandshakeError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return f"cannot connect: {cause.strerror or cause}"
        return f"WebSocket handshake failed: {exc or cause or 'no reason given'}"
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
    max_backoff: float = 30.0,
    _opener: Opener | None = None,  # None: open_connection; tests pass a fake
) -> AsyncIterator[Client]:
    """Connect to a dagd daemon and keep connected until the block ends.

    `dag_ids`: the DAGs whose events the client receives (`"*"`: every DAG; empty: none, for
    a script that only asks and controls).
    `since`: replay from this seq on the first connection too (default: only events from now).
    `initial_snapshot`: start with a GapRepaired item holding the current state of the DAGs.
    `max_backoff`: the longest wait between reconnect attempts, in seconds (the protocol's
    30 s by default; an interactive view may choose a few seconds). Ignored with `backoff`.
    """
    client = Client(
        url,
        token,
        dag_ids,
        since=since,
        heartbeat_interval=heartbeat_interval,
        backoff=backoff or ReconnectBackoff(1.0, max_backoff, rng),
        buffer=buffer,
        ssl_context=ssl_context,
        opener=_opener or open_connection,
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
    "LogFollower",
    "NotConnected",
    "connect",
]
