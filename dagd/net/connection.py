"""One WebSocket client, from its first message to its close.

One connection = three tasks: a reader (requests in, answers queued), a writer that owns every
write to the socket, and a pinger that finds dead peers. They meet at one bounded queue, the
connection's hub subscription: events, answers and heartbeats all go through it, so a client
can never cost more than `send_buffer` messages of memory, and publishing never waits for it.

The writer drains whatever is waiting and puts it on the socket in a single write, with each
event's frame built once for all clients (`FrameCache`). That, not trio-websocket's
`send_message` (one awaited socket write per message per client), is what makes fan-out cheap.
The hub's fast path (`_direct`) goes further: an idle client's events are written straight to
its socket from the publishing task. trio-websocket still does everything else: the handshake,
reading, pings, closing; every byte of it passes through the same `ConnectionStream`, so its
frames and dagd's never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Protocol

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from dagd.core.config import ServerConfig
from dagd.core.protocol import answers, requests
from dagd.core.protocol.answers import Answer
from dagd.core.protocol.codec import encode, parse_client_message
from dagd.core.protocol.codes import CloseCode, ErrorCode, Role
from dagd.core.protocol.events import encode_event
from dagd.core.protocol.pairs import answer_to, with_request_id
from dagd.core.protocol.requests import (
    CONTROL,
    MAX_DAG_IDS,
    MAX_LOG_FOLLOWS,
    ProtocolError,
    Request,
    RequestId,
)
from dagd.daemon.api import DaemonError, DaemonService, LogSlice, StoredEvent, Subscriber
from dagd.net.auth import AuthThrottle, TokenBook
from dagd.net.errors import error
from dagd.net.frames import FrameCache, text_frame
from dagd.net.limits import TokenBucket, too_big
from dagd.net.logfollow import FollowKey, LogFollow
from dagd.net.stream import ConnectionStream

log = logging.getLogger("dagd.net.connection")

REPLAY_PAGE = 1000


@attrs.frozen
class Text:
    """An answer or heartbeat waiting in the queue, as wire text."""

    text: str


@attrs.frozen
class LogFrame:
    """A followed log's chunk, as a frame; `written` is set once it is on the socket (the
    follow reads its next chunk only then: dagd/net/logfollow.py)."""

    frame: bytes
    written: trio.Event


@attrs.frozen
class _ReplayJob:
    since: int
    request_id: RequestId


@attrs.frozen
class _SnapshotJob:
    request_id: RequestId


@attrs.frozen
class _Flush:
    """The stream holds bytes of a direct write that the kernel did not take: write them
    before anything queued after this."""


@attrs.frozen
class CloseJob:
    """Close the connection with `code` once everything queued before it is written."""

    code: int
    reason: str


FLUSH = _Flush()


class Endpoint(Protocol):
    """What a connection shares with the others of its endpoint (dagd.net.server.Server)."""

    daemon: DaemonService
    config: ServerConfig
    tokens: TokenBook
    throttle: AuthThrottle
    frames: FrameCache
    authenticated: set[Connection]  # registered after auth, for heartbeats and shutdown
    unauthenticated: set[Connection]
    slow_closed: int  # connections closed with 1013 so far
    events_delivered: int  # live events written to clients so far (one per client)
    events_replayed: int  # events written by replays so far


class _Closed(Exception):
    """The writer closed the connection as a CloseJob asked: it stops."""


class Connection:
    """One accepted WebSocket: `run()` serves it until either side closes it."""

    def __init__(
        self, server: Endpoint, ws: WebSocketConnection, stream: ConnectionStream, peer: str
    ) -> None:
        self.server = server
        self.daemon = server.daemon
        self.frames = server.frames
        self.ws = ws
        self.stream = stream
        self.peer = peer
        self.role: str | None = None
        self.sub: Subscriber | None = None
        self.dag_ids: set[str] = set()
        self.bucket = TokenBucket(server.config.rate_limit)
        self.rate_warned = False
        self.skip_upto = 0  # events at or below this seq were already sent by a replay/snapshot
        self.writer_busy = False  # the writer task holds items it has not written yet
        self.auth_request_id: RequestId = None
        self.follows: dict[FollowKey, LogFollow] = {}  # followed logs (follow_log)
        self.nursery: trio.Nursery | None = None  # where the follows run
        self.log_turn = trio.Lock()  # the follows take turns to send a chunk

    # ---- sending

    def queue(self, item: object) -> None:
        """Queue an answer or a job for the writer; a client whose queue is full is too slow
        (its subscription is closed, and the writer closes the connection with 1013)."""
        assert self.sub is not None
        try:
            self.sub.put_nowait(item)
        except trio.WouldBlock:
            self.sub.overflowed = True
            self.sub.close()
        except trio.ClosedResourceError:
            pass

    def answer(self, message: Answer, request_id: RequestId = None) -> None:
        """Queue `message` (with `requestId` if given) behind everything queued so far."""
        self.queue(Text(encode(with_request_id(message, request_id))))

    def reply(self, request: Request, answer: Answer) -> None:
        """Queue `answer` to `request` (checked against the protocol's request -> answer
        table, with the request's `requestId`) behind everything queued so far."""
        self.queue(Text(encode(answer_to(request, answer))))

    def error(self, code: ErrorCode | str, message: str, request_id: RequestId = None) -> None:
        """Queue an `error` answer."""
        self.answer(error(code, message), request_id)

    async def send_now(self, message: Answer, request_id: RequestId = None) -> None:
        """Before auth there is no writer task: send directly (bounded by send_timeout)."""
        with trio.move_on_after(self.server.config.send_timeout):
            await self.ws.send_message(encode(with_request_id(message, request_id)))

    async def _write(self, data: bytes | bytearray) -> None:
        """Write `data` after everything written before it, waiting for the socket only for
        what the kernel does not take at once (bounded by send_timeout: trio.TooSlowError)."""
        if self.ws.closed is not None:
            raise ConnectionClosed(self.ws.closed)
        stream = self.stream
        if data:
            stream.write_nowait(data)
        if stream.pending:
            with trio.fail_after(self.server.config.send_timeout):
                await stream.flush()

    def _direct(self, events: list[StoredEvent]) -> bool:
        """The hub's fast path: write committed events straight to an idle client's socket.

        Taken only when nothing can be overtaken: the writer task is idle, its queue is empty,
        no replay or snapshot is running, and the stream is idle (nothing pending, nobody
        writing, plain TCP). Most deliveries then cost one write system call and no task
        switch. If the kernel takes only part of the data, the rest waits in the stream and
        the writer is told to flush it before anything queued later."""
        sub = self.sub
        if self.writer_busy or sub is None or sub.queued() or not self.stream.idle():
            return False
        if self.ws.closed is not None or events[0].seq <= self.skip_upto:
            return False
        try:
            done = self.stream.write_nowait(self.frames.frames(events))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the writer path finds out and reports it
        self.server.events_delivered += len(events)
        if not done:
            self.queue(FLUSH)
        return True

    # ---- lifecycle

    async def run(self) -> None:
        """Authenticate, then serve requests and events until the connection closes."""
        self.server.unauthenticated.add(self)
        try:
            if not await self._authenticate():
                return
        finally:
            self.server.unauthenticated.discard(self)
        # Each follow holds at most one item in the queue (a chunk or its log_end): room for
        # them on top of send_buffer, so log chunks never take an event's place.
        self.sub = self.daemon.subscribe(set(), self.server.config.send_buffer + MAX_LOG_FOLLOWS)
        self.sub.direct = self._direct
        self.server.authenticated.add(self)
        try:
            assert self.role is not None
            welcome = answers.AuthSuccess(Role(self.role), self.daemon.committed_seq)
            await self.send_now(welcome, self.auth_request_id)
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer, nursery.cancel_scope)
                nursery.start_soon(self._pinger, nursery.cancel_scope)
                await self._reader()
                if not self.sub.closed:
                    nursery.cancel_scope.cancel()
                # else the writer is closing the connection (1013) and ends the nursery
                # itself: cancelling it here would cut the close short (bounded by
                # send_timeout / the 1 s close timeout)
        finally:
            self.server.authenticated.discard(self)
            self.sub.close()

    async def _authenticate(self) -> bool:
        cfg = self.server.config
        text = None
        with trio.move_on_after(cfg.auth_timeout):
            text = await self.ws.get_message()
        if text is None:
            await self.send_now(
                error(
                    ErrorCode.AUTH_TIMEOUT,
                    f'send {{"type":"auth","token":...}} within {cfg.auth_timeout:g}s',
                )
            )
            await self._close(CloseCode.POLICY, "auth timeout")
            return False
        if too_big(text, cfg.max_message_size):
            await self._close(CloseCode.TOO_BIG, "message too big")
            return False
        message: Request | ProtocolError
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            message = exc
        if not isinstance(message, requests.Auth):
            detail = f" ({message.message})" if isinstance(message, ProtocolError) else ""
            await self.send_now(
                error(ErrorCode.AUTH_REQUIRED, f"the first message must be auth{detail}")
            )
            await self._close(CloseCode.POLICY, "auth required")
            return False
        throttle = self.server.throttle
        entry = self.server.tokens.check(message.token)
        if entry is None:
            # Only a failure waits (after the check): a right token is never slowed down by
            # someone else's wrong ones from the same address (a reverse proxy's, say).
            throttle.failed(self.peer)
            delay = throttle.delay(self.peer)
            if delay:
                await trio.sleep(delay)
            log.warning("auth failed from %s", self.peer)  # never the token itself
            await self.send_now(error(ErrorCode.AUTH_FAILED, "invalid token"), message.request_id)
            await self._close(CloseCode.POLICY, "auth failed")
            return False
        throttle.succeeded(self.peer)
        self.role = entry.role
        self.auth_request_id = message.request_id
        return True

    async def close_going_away(self) -> None:
        """Shutdown, before this connection authenticated: its reader sees the close."""
        with contextlib.suppress(ConnectionClosed, trio.BrokenResourceError, OSError):
            await self._close(CloseCode.GOING_AWAY, "daemon shutting down")

    async def _close(self, code: int, reason: str) -> None:
        """Close with `code`; if even the close frame cannot be written within a second, drop
        the TCP connection."""
        with trio.move_on_after(1.0) as scope:
            await self.ws.aclose(code, reason)
        if scope.cancelled_caught:
            await self._abort()

    async def _abort(self) -> None:
        closed = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0), contextlib.suppress(*closed):
            await self.stream.aclose()

    # ---- reading

    async def _reader(self) -> None:
        cfg = self.server.config
        while True:
            text = await self.ws.get_message()
            if too_big(text, cfg.max_message_size):
                await self._close(CloseCode.TOO_BIG, "message too big")
                return
            balance = self.bucket.take()
            if balance < 0:
                if balance < -self.bucket.capacity:
                    await self._close(CloseCode.POLICY, "rate limit exceeded")
                    return
                if not self.rate_warned:
                    self.rate_warned = True
                    self.error(
                        "rate_limited",
                        f"more than {cfg.rate_limit} messages per "
                        "second; slow down or the connection will be closed",
                    )
                continue
            self.rate_warned = False
            message: Request | None = None
            try:
                message = parse_client_message(text)
                await self._handle(message)
            except ProtocolError as exc:
                self.error(exc.code, exc.message, exc.request_id)
            except DaemonError as exc:
                rid = message.request_id if message is not None else None
                self.error(exc.code, exc.message, rid)
            if self.sub is not None and self.sub.closed:
                return  # the writer is closing the connection

    async def _handle(self, message: Request) -> None:
        rid = message.request_id
        if isinstance(message, CONTROL) and self.role != Role.OPERATE:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"this token's role is 'read': it cannot {type(message).__name__.lower()}",
                rid,
            )
        daemon = self.daemon
        assert self.sub is not None
        if isinstance(message, requests.Subscribe | requests.Unsubscribe):
            if isinstance(message, requests.Subscribe):
                self.dag_ids.update(message.dag_ids)
                kind: type[answers.Subscribed | answers.Unsubscribed] = answers.Subscribed
            else:
                self.dag_ids.difference_update(message.dag_ids)
                kind = answers.Unsubscribed
            if len(self.dag_ids) > MAX_DAG_IDS:
                self.dag_ids.difference_update(message.dag_ids)
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, f"at most {MAX_DAG_IDS} subscriptions", rid
                )
            self.sub.set_dags(None if "*" in self.dag_ids else self.dag_ids)
            self.reply(message, kind(sorted(self.dag_ids)))
            if isinstance(message, requests.Subscribe) and message.since is not None:
                # Queued right after the filter changed, with no await in between: every live
                # event for the new set is behind this job, so the replay and the live stream
                # join in seq order with nothing repeated.
                self.queue(_ReplayJob(message.since, rid))
        elif isinstance(message, requests.Replay):
            self.queue(_ReplayJob(message.since, rid))
        elif isinstance(message, requests.Snapshot):
            self.queue(_SnapshotJob(rid))
        elif isinstance(message, requests.Trigger):
            run_id = await daemon.trigger(message.dag_id, message.params)
            self.reply(message, answers.Triggered(message.dag_id, run_id))
        elif isinstance(message, requests.Cancel):
            await daemon.cancel(message.run_id)
            self.reply(message, answers.CancelAccepted(message.run_id))
        elif isinstance(message, requests.Retry):
            await daemon.retry(message.run_id)
            self.reply(message, answers.RetryAccepted(message.run_id))
        elif isinstance(message, requests.ListDags):
            self.reply(message, answers.DagList(daemon.list_dags(), daemon.broken_files()))
        elif isinstance(message, requests.ListPools):
            self.reply(message, answers.PoolList(daemon.list_pools()))
        elif isinstance(message, requests.ListRuns):
            runs = await daemon.list_runs(message.dag_id, message.limit)
            self.reply(message, answers.RunList(runs))
        elif isinstance(message, requests.GetRun):
            self.reply(message, await daemon.run_detail(message.run_id))
        elif isinstance(message, requests.GetDag):
            self.reply(message, daemon.dag_detail(message.dag_id))
        elif isinstance(message, requests.Pause):
            await daemon.pause(message.dag_id)
            self.reply(message, answers.Paused(message.dag_id))
        elif isinstance(message, requests.Unpause):
            next_run = await daemon.unpause(message.dag_id)
            self.reply(message, answers.Unpaused(message.dag_id, next_run))
        elif isinstance(message, requests.Backfill):
            result = await daemon.backfill(
                message.dag_id,
                message.start,
                message.end,
                message.params,
                rerun=message.rerun,
                dry_run=message.dry_run,
            )
            self.reply(message, result)
        elif isinstance(message, requests.FollowLog):
            await self._follow_log(message)
        elif isinstance(message, requests.UnfollowLog):
            key: FollowKey = (message.run_id, message.step_id, message.attempt, message.stream)
            follow = self.follows.pop(key, None)
            if follow is not None:
                follow.stop()  # before the answer is queued: nothing of it comes after
            self.reply(message, answers.LogUnfollowed(*key))
        elif isinstance(message, requests.Ping):
            self.reply(message, answers.Pong(time.time()))
        elif isinstance(message, requests.Auth):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "already authenticated", rid)

    # ---- followed logs (dagd/net/logfollow.py)

    async def _follow_log(self, message: requests.FollowLog) -> None:
        rid = message.request_id
        if len(self.follows) >= MAX_LOG_FOLLOWS:
            raise ProtocolError(
                ErrorCode.TOO_MANY_FOLLOWS,
                f"this connection follows {MAX_LOG_FOLLOWS} logs already; unfollow_log one"
                " or wait for its log_end",
                rid,
            )
        first = await self.daemon.read_log(
            message.run_id, message.step_id, message.attempt, message.stream, message.offset
        )
        if message.tail is not None and first.size > message.tail:
            first = await self._tail(first, first.size - message.tail)
        key: FollowKey = (message.run_id, message.step_id, first.attempt, message.stream)
        if key in self.follows:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"already following attempt {first.attempt} of step {message.step_id!r}"
                f" ({message.stream}); unfollow_log it first",
                rid,
            )
        follow = LogFollow(key, first.offset)
        self.follows[key] = follow
        self.reply(message, answers.LogFollowing(*key, first.offset))
        assert self.nursery is not None
        self.nursery.start_soon(follow.run, self, first)

    async def _tail(self, first: LogSlice, start: int) -> LogSlice:
        """The read of a `tail` follow: from `start`, moved past the continuation bytes of a
        UTF-8 sequence it cuts (at most 3), so the first chunk starts with a whole one."""
        piece = await self.daemon.read_log(
            first.run_id, first.step_id, first.attempt, first.stream, start
        )
        skip = 0
        while skip < min(3, len(piece.data)) and piece.data[skip] & 0xC0 == 0x80:
            skip += 1
        return attrs.evolve(piece, offset=start + skip, data=piece.data[skip:])

    def log_room(self) -> bool:
        """Room for a log chunk: the queue is less than half full (of send_buffer, and at
        least room for one item: with send_buffer 1 half is 0 and a follow would never
        move) and no bytes wait for the kernel to take them."""
        sub = self.sub
        if sub is None or self.stream.pending:
            return False
        return sub.queued() < max(1, self.server.config.send_buffer // 2)

    def queue_log_chunk(self, frame: bytes) -> trio.Event:
        """Queue a log chunk's frame; the event is set once the writer wrote it."""
        written = trio.Event()
        self.queue(LogFrame(frame, written))
        return written

    def end_follow(self, follow: LogFollow, end: answers.LogEnd) -> None:
        """A follow is over: forget it and queue its `log_end`."""
        if self.follows.get(follow.key) is follow:
            del self.follows[follow.key]
        self.queue(Text(encode(end)))

    # ---- writing

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        assert self.sub is not None
        sub = self.sub
        get_nowait = sub.get_nowait
        try:
            while True:
                try:
                    first = await sub.get()
                except trio.EndOfChannel:
                    break
                self.writer_busy = True  # set before any checkpoint: see _direct
                batch = [first]
                while len(batch) < 512:
                    try:
                        batch.append(get_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if sub.overflowed:
                    break
                await self._send_batch(batch)
                self.writer_busy = False
            if sub.overflowed:
                self.server.slow_closed += 1
                log.info(
                    "closing %s: slow consumer (send buffer of %d full)",
                    self.peer,
                    self.server.config.send_buffer,
                )
                await self._close(CloseCode.TRY_AGAIN, "slow consumer")
        except (_Closed, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except trio.TooSlowError:
            # A send was cut short: the stream is in an unknown state; never write again.
            await self._abort()
        cancel_scope.cancel()

    async def _send_batch(self, batch: list[object]) -> None:
        out = bytearray()
        skip = self.skip_upto
        frame = self.frames.frame
        written: list[trio.Event] = []  # of the log chunks in `out`
        delivered = 0
        for item in batch:
            if isinstance(item, StoredEvent):
                if item.seq > skip:
                    out += frame(item)
                    delivered += 1
            elif isinstance(item, Text):
                out += text_frame(item.text.encode())
            elif isinstance(item, LogFrame):
                out += item.frame
                written.append(item.written)
            elif item is FLUSH:
                pass  # the stream writes its pending bytes before `out` (see _write)
            else:
                await self._write(out)
                out = bytearray()
                _set_all(written)
                if isinstance(item, _ReplayJob):
                    await self._replay(item)
                elif isinstance(item, _SnapshotJob):
                    await self._snapshot(item)
                elif isinstance(item, CloseJob):
                    await self._close(item.code, item.reason)
                    raise _Closed
                skip = self.skip_upto
        await self._write(out)
        _set_all(written)
        self.server.events_delivered += delivered

    def _wanted(self, dag_id: str) -> bool:
        return "*" in self.dag_ids or dag_id in self.dag_ids

    async def _replay(self, job: _ReplayJob) -> None:
        """Every stored event after `job.since` for the current subscriptions, then
        `replay_complete`; or one error instead: `replay_ahead` when `since` is beyond the
        newest committed seq (the cursor is from another event log: this daemon never sent
        it), `replay_unavailable` when retention already deleted events after `since`, or
        deletes some the replay has not sent yet while it runs (then after the events sent so
        far, never a `replay_complete` over a gap)."""
        daemon = self.daemon
        until = daemon.committed_seq
        if job.since > until:
            # committed_seq never goes down (the log's AUTOINCREMENT counter survives
            # retention and restarts) and only committed events reach clients, so no cursor
            # this daemon gave out can be ahead of it.
            ahead = error(
                ErrorCode.REPLAY_AHEAD,
                f"seq {job.since} is beyond this daemon's newest event ({until}): the cursor "
                "comes from another event log (a restored backup or a new state folder); "
                "ask for a snapshot and continue from its seq",
            )
            await self._write(_answer_frame(ahead, job.request_id))
            return
        oldest = await daemon.oldest_seq()
        if job.since < until and (oldest is None or oldest > job.since + 1):
            gone = error(
                ErrorCode.REPLAY_UNAVAILABLE,
                f"events after seq {job.since} are no longer retained; ask for a snapshot",
                oldest_seq=oldest,
            )
            await self._write(_answer_frame(gone, job.request_id))
            return
        cursor = job.since
        while cursor < until:
            rows = await daemon.events_page(cursor, until, REPLAY_PAGE)
            # Retention may have deleted events after `cursor` since the check above (history
            # retention deletes a finished run's events from the middle of the log). The
            # floor only rises, so if it is still at most `cursor` + 1 after the page was read,
            # nothing after `cursor` was gone when it was read and the page is whole.
            oldest = await daemon.oldest_seq()
            if oldest is None or oldest > cursor + 1:
                # The client has every event up to `cursor`: no need to send them again live.
                self.skip_upto = max(self.skip_upto, cursor)
                gone = error(
                    ErrorCode.REPLAY_UNAVAILABLE,
                    f"events after seq {cursor} were deleted by retention during the replay;"
                    " ask for a snapshot",
                    oldest_seq=oldest,
                )
                await self._write(_answer_frame(gone, job.request_id))
                return
            if not rows:
                break
            out = bytearray()
            replayed = 0
            for _seq, dag_id, body in rows:
                if self._wanted(dag_id):
                    out += text_frame(body.encode())
                    replayed += 1
            if out:
                await self._write(out)
                self.server.events_replayed += replayed
            cursor = rows[-1][0]
        self.skip_upto = max(self.skip_upto, until)
        await self._write(_answer_frame(answers.ReplayComplete(until), job.request_id))

    async def _snapshot(self, job: _SnapshotJob) -> None:
        dag_filter = None if "*" in self.dag_ids else set(self.dag_ids)
        events, seq = self.daemon.snapshot(dag_filter)
        out = bytearray()
        for event in events:
            out += text_frame(encode_event(event).encode())
        out += _answer_frame(answers.SnapshotComplete(seq), job.request_id)
        await self._write(out)
        self.skip_upto = max(self.skip_upto, seq)

    async def _pinger(self, cancel_scope: trio.CancelScope) -> None:
        interval = self.server.config.ping_interval
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as scope:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    break
            if scope.cancelled_caught:
                log.info("closing %s: no pong within %gs", self.peer, interval)
                await self._abort()
                break
        cancel_scope.cancel()


def _set_all(events: list[trio.Event]) -> None:
    for event in events:
        event.set()
    events.clear()


def _answer_frame(message: Answer, request_id: RequestId) -> bytes:
    """The text frame of `message` with `requestId`, for the writer's own writes."""
    return text_frame(encode(with_request_id(message, request_id)).encode())
