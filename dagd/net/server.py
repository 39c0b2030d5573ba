"""The WebSocket endpoint, `/api/v1/ws`, served from the daemon's own trio loop.

One connection = three tasks: a reader (requests in, answers queued), a writer that owns every
write to the socket, and a pinger that finds dead peers. They meet at one bounded queue, the
connection's hub subscription: events, answers and heartbeats all go through it, so a client
can never cost more than `send_buffer` messages of memory, and publishing never waits for it.

The writer drains whatever is waiting and puts it on the socket in a single write, with frames
built once per event for all clients (see `text_frame`). That, not trio-websocket's
`send_message` (one awaited socket write per message per client), is what makes fan-out cheap.
trio-websocket still does everything else: the handshake, reading, pings, closing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from dagd.core.config import Config
from dagd.core.protocol.events import encode_event, text_frame
from dagd.core.protocol.requests import (
    CONTROL,
    MAX_DAG_IDS,
    Auth,
    Cancel,
    ListDags,
    ListRuns,
    Ping,
    ProtocolError,
    Replay,
    Retry,
    Snapshot,
    Subscribe,
    Trigger,
    Unsubscribe,
    parse_client_message,
)
from dagd.core.timefmt import iso_z
from dagd.daemon.api import Daemon, DaemonError, StoredEvent, Subscriber
from dagd.net import wsfail

log = logging.getLogger("dagd.net.server")

PATH = "/api/v1/ws"
REPLAY_PAGE = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013  # the peer is too slow: "try again later", and replay what you missed


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------ tokens


@attrs.frozen
class TokenEntry:
    digest: bytes
    role: str
    name: str


class TokenBook:
    """Accepted tokens as SHA-256 digests; checks take the same time whichever one matches."""

    def __init__(self, entries: list[TokenEntry], generated_file: str | None = None) -> None:
        self.entries = entries
        self.generated_file = generated_file

    @classmethod
    def from_config(cls, config: Config) -> TokenBook:
        entries = []
        for spec in config.tokens:
            if spec.token is not None:
                digest = hashlib.sha256(spec.token.encode()).digest()
            elif spec.sha256 is not None:
                try:
                    digest = bytes.fromhex(spec.sha256)
                except ValueError:
                    raise ValueError(f"auth token {spec.name!r}: sha256 is not hex") from None
                if len(digest) != 32:
                    raise ValueError(f"auth token {spec.name!r}: sha256 must be 64 hex digits")
            else:
                assert spec.env is not None
                value = os.environ.get(spec.env)
                if not value:
                    raise ValueError(
                        f"auth token {spec.name!r}: environment variable {spec.env} is not set"
                    )
                digest = hashlib.sha256(value.encode()).digest()
            entries.append(TokenEntry(digest, spec.role, spec.name or spec.role))
        if entries:
            return cls(entries)
        token = ensure_token_file(config)
        return cls(
            [TokenEntry(hashlib.sha256(token.encode()).digest(), "operate", "generated")],
            generated_file=str(config.token_file),
        )

    def check(self, token: str) -> TokenEntry | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for entry in self.entries:  # no early exit: timing says nothing about which matched
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return found


def ensure_token_file(config: Config) -> str:
    """The generated token in the state folder (mode 0600), created on first use."""
    path = config.token_file
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    # Missing, or empty (never an empty token: "" would then open the door to anyone).
    # Written to a temporary file and renamed, so a crash never leaves an empty token file.
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return token


class AuthThrottle:
    """Slows down repeated auth failures from one peer address: 0.25 s, 0.5 s, ... up to 5 s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures: dict[str, tuple[int, float]] = {}
        self._clock = clock

    def delay(self, peer: str) -> float:
        count, last = self._failures.get(peer, (0, 0.0))
        if count == 0 or self._clock() - last > 300:
            return 0.0
        return min(5.0, 0.25 * 2 ** (count - 1))

    def failed(self, peer: str) -> None:
        count, last = self._failures.get(peer, (0, 0.0))
        if self._clock() - last > 300:
            count = 0
        self._failures[peer] = (count + 1, self._clock())
        if len(self._failures) > 10_000:  # forget the oldest peers
            for key in sorted(self._failures, key=lambda k: self._failures[k][1])[:5000]:
                del self._failures[key]

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)


class TokenBucket:
    """`rate` messages per second with bursts of twice that."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = 2 * rate
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """Take one token; returns the balance (negative: over the limit by that much)."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        self.tokens -= 1
        return self.tokens


# ------------------------------------------------------------- connection


@attrs.frozen
class _Text:
    """An answer or heartbeat waiting in the queue, as wire text."""

    text: str


@attrs.frozen
class _ReplayJob:
    since: int
    request_id: Any


@attrs.frozen
class _SnapshotJob:
    request_id: Any


@attrs.frozen
class _Remainder:
    """The unsent tail of a direct write; the stream lock is held until it is written."""

    data: memoryview


@attrs.frozen
class _CloseJob:
    code: int
    reason: str


class Connection:
    def __init__(self, server: Server, ws: WebSocketConnection, peer: str) -> None:
        self.server = server
        self.daemon = server.daemon
        self.ws = ws
        self.peer = peer
        self.role: str | None = None
        self.sub: Subscriber | None = None
        self.dag_ids: set[str] = set()
        self.bucket = TokenBucket(server.config.rate_limit)
        self.rate_warned = False
        self.skip_upto = 0  # events at or below this seq were already sent by a replay/snapshot
        self.writer_busy = False  # the writer task holds items it has not written yet
        self.auth_request_id: Any = None

    # ---- sending

    def queue(self, item: object) -> None:
        """Queue an answer for the writer; a client whose queue is full is too slow."""
        assert self.sub is not None
        try:
            self.sub._send.send_nowait(item)  # type: ignore[arg-type]
        except trio.WouldBlock:
            self.sub.overflowed = True
            self.sub.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def answer(self, message: dict[str, Any], request_id: Any = None) -> None:
        if request_id is not None:
            message["requestId"] = request_id
        self.queue(_Text(dumps(message)))

    def error(self, code: str, message: str, request_id: Any = None, **extra: Any) -> None:
        self.answer(self.server.error_message(code, message, **extra), request_id)

    async def send_now(self, message: dict[str, Any]) -> None:
        """Before auth there is no writer task: send directly (bounded by send_timeout)."""
        with trio.move_on_after(self.server.config.send_timeout):
            await self.ws.send_message(dumps(message))

    def _fileno(self) -> int:
        """The socket's file descriptor, or -1 (TLS, or closed: never write to a stale fd)."""
        sock = getattr(self.ws._stream, "socket", None)
        return sock.fileno() if sock is not None else -1

    async def _write(self, data: bytes | bytearray) -> None:
        """One socket write under trio-websocket's own lock (pongs and close frames use it).

        The first attempt is a plain non-blocking write: on a healthy connection it takes all
        the data, and the task never suspends. Only what the kernel did not take waits for
        the socket, bounded by send_timeout."""
        ws = self.ws
        if ws.closed is not None:
            raise ConnectionClosed(ws.closed)
        lock = ws._stream_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._write_locked(data)
        finally:
            lock.release()

    async def _write_locked(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        fd = self._fileno()
        if fd >= 0:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        if view:
            with trio.fail_after(self.server.config.send_timeout):
                await self.ws._stream.send_all(view)

    def _direct(self, events: list[StoredEvent]) -> bool:
        """The hub's fast path: write committed events straight to an idle client's socket.

        Taken only when nothing can be overtaken: the writer task is idle, its queue is empty,
        no replay or snapshot is running, and nobody holds the stream lock. Most deliveries
        then cost one write system call and no task switch. If the kernel takes only part of
        the data, the lock is kept and the rest goes to the front of the queue, for the writer
        to finish before anything else (a pong must never land inside a frame)."""
        ws = self.ws
        sub = self.sub
        if self.writer_busy or ws.closed is not None or sub is None or sub.queued():
            return False
        lock = ws._stream_lock
        if lock.value == 0 or events[0].seq <= self.skip_upto:
            return False
        fd = self._fileno()
        if fd < 0:
            return False
        data = events[0].frame if len(events) == 1 else b"".join(e.frame for e in events)
        try:
            sent = os.write(fd, data)
        except OSError:  # full, or broken: the writer path finds out and reports it
            return False
        if sent < len(data):
            lock.acquire_nowait()
            sub._send.send_nowait(_Remainder(memoryview(data)[sent:]))  # type: ignore[arg-type]
        return True

    # ---- lifecycle

    async def run(self) -> None:
        self.server.unauthenticated.add(self)
        try:
            if not await self._authenticate():
                return
        finally:
            self.server.unauthenticated.discard(self)
        self.sub = self.daemon.subscribe(set(), self.server.config.send_buffer)
        if not self.ws._stream_lock.locked():
            # A semaphore instead of trio-websocket's lock: same mutual exclusion, but the hub's
            # direct write (a synchronous call in the publishing task) can take it and leave
            # the release to this connection's writer task.
            self.ws._stream_lock = trio.Semaphore(1)
            self.sub.direct = self._direct
        self.server.authenticated.add(self)
        try:
            welcome: dict[str, Any] = {
                "type": "auth_success",
                "role": self.role,
                "seq": self.daemon.store.committed_seq,
            }
            if self.auth_request_id is not None:
                welcome["requestId"] = self.auth_request_id
            await self.send_now(welcome)
            async with trio.open_nursery() as nursery:
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
                self.server.error_message(
                    "auth_timeout",
                    f'send {{"type":"auth","token":...}} within {cfg.auth_timeout:g}s',
                )
            )
            await self._close(CLOSE_POLICY, "auth timeout")
            return False
        if _too_big(text, cfg.max_message_size):
            await self._close(CLOSE_TOO_BIG, "message too big")
            return False
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            message = exc
        if not isinstance(message, Auth):
            detail = f" ({message.message})" if isinstance(message, ProtocolError) else ""
            await self.send_now(
                self.server.error_message(
                    "auth_required", f"the first message must be auth{detail}"
                )
            )
            await self._close(CLOSE_POLICY, "auth required")
            return False
        throttle = self.server.throttle
        delay = throttle.delay(self.peer)
        if delay:
            await trio.sleep(delay)
        entry = self.server.tokens.check(message.token)
        if entry is None:
            throttle.failed(self.peer)
            log.warning("auth failed from %s", self.peer)  # never the token itself
            reply = self.server.error_message("auth_failed", "invalid token")
            if message.request_id is not None:
                reply["requestId"] = message.request_id
            await self.send_now(reply)
            await self._close(CLOSE_POLICY, "auth failed")
            return False
        throttle.succeeded(self.peer)
        self.role = entry.role
        self.auth_request_id = message.request_id
        return True

    async def close_going_away(self) -> None:
        """Shutdown, before this connection authenticated: its reader sees the close."""
        with contextlib.suppress(ConnectionClosed, trio.BrokenResourceError, OSError):
            await self._close(CLOSE_GOING_AWAY, "daemon shutting down")

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
            await self.ws._stream.aclose()

    # ---- reading

    async def _reader(self) -> None:
        cfg = self.server.config
        while True:
            text = await self.ws.get_message()
            if _too_big(text, cfg.max_message_size):
                await self._close(CLOSE_TOO_BIG, "message too big")
                return
            balance = self.bucket.take()
            if balance < 0:
                if balance < -self.bucket.capacity:
                    await self._close(CLOSE_POLICY, "rate limit exceeded")
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
            try:
                message = parse_client_message(text)
                await self._handle(message)
            except ProtocolError as exc:
                self.error(exc.code, exc.message, exc.request_id)
            except DaemonError as exc:
                self.error(exc.code, exc.message, getattr(message, "request_id", None))
            if self.sub is not None and self.sub.closed:
                return  # the writer is closing the connection

    async def _handle(self, message: object) -> None:
        rid = getattr(message, "request_id", None)
        if isinstance(message, CONTROL) and self.role != "operate":
            raise ProtocolError(
                "forbidden",
                f"this token's role is 'read': it cannot {type(message).__name__.lower()}",
                rid,
            )
        daemon = self.daemon
        assert self.sub is not None
        if isinstance(message, Subscribe | Unsubscribe):
            if isinstance(message, Subscribe):
                self.dag_ids.update(message.dag_ids)
                kind = "subscribed"
            else:
                self.dag_ids.difference_update(message.dag_ids)
                kind = "unsubscribed"
            if len(self.dag_ids) > MAX_DAG_IDS:
                self.dag_ids.difference_update(message.dag_ids)
                raise ProtocolError("invalid_message", f"at most {MAX_DAG_IDS} subscriptions", rid)
            self.sub.set_dags(None if "*" in self.dag_ids else self.dag_ids)
            self.answer({"type": kind, "dagIds": sorted(self.dag_ids)}, rid)
            if isinstance(message, Subscribe) and message.since is not None:
                # Queued right after the filter changed, with no await in between: every live
                # event for the new set is behind this job, so the replay and the live stream
                # join in seq order with nothing repeated.
                self.queue(_ReplayJob(message.since, rid))
        elif isinstance(message, Replay):
            self.queue(_ReplayJob(message.since, rid))
        elif isinstance(message, Snapshot):
            self.queue(_SnapshotJob(rid))
        elif isinstance(message, Trigger):
            run_id = await daemon.trigger(message.dag_id, message.params)
            self.answer({"type": "triggered", "dagId": message.dag_id, "runId": run_id}, rid)
        elif isinstance(message, Cancel):
            await daemon.cancel(message.run_id)
            self.answer({"type": "cancel_accepted", "runId": message.run_id}, rid)
        elif isinstance(message, Retry):
            await daemon.retry(message.run_id)
            self.answer({"type": "retry_accepted", "runId": message.run_id}, rid)
        elif isinstance(message, ListDags):
            self.answer({"type": "dags", "dags": [dag_to_wire(d) for d in daemon.list_dags()]}, rid)
        elif isinstance(message, ListRuns):
            runs = await daemon.list_runs(message.dag_id, message.limit)
            self.answer({"type": "runs", "runs": [run_to_wire(r) for r in runs]}, rid)
        elif isinstance(message, Ping):
            self.answer({"type": "pong", "timestamp": iso_z(time.time())}, rid)
        elif isinstance(message, Auth):
            raise ProtocolError("invalid_message", "already authenticated", rid)

    # ---- writing

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        assert self.sub is not None
        receive = self.sub.receive
        sub = self.sub
        try:
            while True:
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    break
                self.writer_busy = True  # set before any checkpoint: see _direct
                batch = [first]
                while len(batch) < 512:
                    try:
                        batch.append(receive.receive_nowait())
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
                await self._close(CLOSE_TRY_AGAIN, "slow consumer")
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except trio.TooSlowError:
            # A send was cut short: the stream is in an unknown state; never write again.
            await self._abort()
        cancel_scope.cancel()

    async def _send_batch(self, batch: list[object]) -> None:
        out = bytearray()
        skip = self.skip_upto
        for item in batch:
            kind = type(item)
            if kind is StoredEvent:
                if item.seq > skip:  # type: ignore[attr-defined]
                    out += item.frame  # type: ignore[attr-defined]
            elif kind is _Text:
                out += text_frame(item.text.encode())  # type: ignore[attr-defined]
            else:
                if out:
                    await self._write(out)
                    out = bytearray()
                if kind is _Remainder:
                    lock = self.ws._stream_lock  # held since the direct write
                    try:
                        await self._write_locked(item.data)  # type: ignore[attr-defined]
                    finally:
                        lock.release()
                elif kind is _ReplayJob:
                    await self._replay(item)  # type: ignore[arg-type]
                elif kind is _SnapshotJob:
                    await self._snapshot(item)  # type: ignore[arg-type]
                elif kind is _CloseJob:
                    await self._close(item.code, item.reason)  # type: ignore[attr-defined]
                    raise ConnectionClosed(None)  # type: ignore[arg-type]
                skip = self.skip_upto
        if out:
            await self._write(out)

    def _wanted(self, dag_id: str) -> bool:
        return "*" in self.dag_ids or dag_id in self.dag_ids

    async def _replay(self, job: _ReplayJob) -> None:
        store = self.daemon.store
        until = store.committed_seq
        oldest = await store.oldest_seq()
        if job.since < until and (oldest is None or oldest > job.since + 1):
            message = self.server.error_message(
                "replay_unavailable",
                f"events after seq {job.since} are no longer retained; ask for a snapshot",
                oldestSeq=oldest,
            )
            if job.request_id is not None:
                message["requestId"] = job.request_id
            await self._write(text_frame(dumps(message).encode()))
            return
        cursor = job.since
        while cursor < until:
            rows = await store.events_page(cursor, until, REPLAY_PAGE)
            if not rows:
                break
            out = bytearray()
            for _seq, dag_id, body in rows:
                if self._wanted(dag_id):
                    out += text_frame(body.encode())
            if out:
                await self._write(out)
            cursor = rows[-1][0]
        self.skip_upto = max(self.skip_upto, until)
        done: dict[str, Any] = {"type": "replay_complete", "seq": until}
        if job.request_id is not None:
            done["requestId"] = job.request_id
        await self._write(text_frame(dumps(done).encode()))

    async def _snapshot(self, job: _SnapshotJob) -> None:
        dag_filter = None if "*" in self.dag_ids else set(self.dag_ids)
        events, seq = self.daemon.snapshot(dag_filter)
        out = bytearray()
        for event in events:
            out += text_frame(encode_event(event).encode())
        done: dict[str, Any] = {"type": "snapshot_complete", "seq": seq}
        if job.request_id is not None:
            done["requestId"] = job.request_id
        out += text_frame(dumps(done).encode())
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


# ----------------------------------------------------------------- answers


def dag_to_wire(info: Any) -> dict[str, Any]:
    return {
        "dagId": info.id,
        "description": info.description,
        "schedule": info.schedule,
        "nextRun": iso_z(info.next_run) if info.next_run is not None else None,
        "steps": info.steps,
        "tags": info.tags,
        "params": info.params,
    }


def run_to_wire(run: Any) -> dict[str, Any]:
    return {
        "dagId": run.dag_id,
        "runId": run.run_id,
        "status": run.status,
        "params": run.params,
        "queuedAt": iso_z(run.queued_at),
        "startedAt": iso_z(run.started_at) if run.started_at is not None else None,
        "endedAt": iso_z(run.ended_at) if run.ended_at is not None else None,
    }


# ------------------------------------------------------------------ server


class Server:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config.server
        self.tokens = TokenBook.from_config(daemon.config)
        self.throttle = AuthThrottle()
        self.connections = 0
        self.authenticated: set[Connection] = set()
        self.unauthenticated: set[Connection] = set()  # accepted, auth not yet done
        self.slow_closed = 0
        self.port: int | None = None
        self._closing = False
        self._drained = trio.Event()

    def error_message(self, code: str, message: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": "error",
            "code": code,
            "message": message,
            "timestamp": iso_z(time.time()),
            **extra,
        }

    async def handle(self, request: WebSocketRequest) -> None:
        """trio-websocket calls this per connection; nothing may escape it (an exception here
        would stop the whole server)."""
        peer = _peer(request)
        try:
            if request.path.split("?", 1)[0] != PATH:
                await request.reject(404, body=b"not found: the endpoint is " + PATH.encode())
                return
            origin = _header(request, b"origin")
            if origin is not None and origin not in self.config.origins:
                log.info("refused %s: origin %r is not allowed", peer, origin)
                await request.reject(403, body=b"origin not allowed")
                return
            if self._closing:
                await request.reject(503, body=b"shutting down")
                return
            if self.connections >= self.config.max_connections:
                await request.reject(503, body=b"too many connections")
                return
            self.connections += 1
            try:
                ws = await request.accept()
                await Connection(self, ws, peer).run()
            finally:
                self.connections -= 1
                if self._closing and not self.authenticated:
                    self._drained.set()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except trio.TooSlowError:
            pass
        except BaseExceptionGroup as group:
            rest = group.split(
                (
                    ConnectionClosed,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    OSError,
                    trio.TooSlowError,
                )
            )[1]
            if rest is not None:
                if rest.split(trio.Cancelled)[1] is None:
                    raise
                log.exception("connection %s failed", peer, exc_info=rest)
        except Exception:
            log.exception("connection %s failed", peer)

    async def heartbeats(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_interval)
            text = dumps({"type": "heartbeat", "timestamp": iso_z(time.time())})
            beat = _Text(text)
            for conn in list(self.authenticated):
                conn.queue(beat)

    async def close_all(self) -> None:
        """Deliver what is queued, then close every connection with 1001 (going away); those
        still before authentication are closed with 1001 at once."""
        self._closing = True
        async with trio.open_nursery() as nursery:
            for conn in list(self.unauthenticated):
                nursery.start_soon(conn.close_going_away)
            if self.authenticated:
                for conn in list(self.authenticated):
                    conn.queue(_CloseJob(CLOSE_GOING_AWAY, "daemon shutting down"))
                with trio.move_on_after(3.0):
                    await self._drained.wait()


def _too_big(text: str | bytes, limit: int) -> bool:
    """Is the message over `limit` bytes? (trio-websocket's own limit counts characters.)"""
    if isinstance(text, bytes):
        return len(text) > limit
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _peer(request: WebSocketRequest) -> str:
    remote = request.remote
    return getattr(remote, "address", None) or str(remote)


async def serve(
    daemon: Daemon, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the protocol until cancelled; `task_status.started(server)` once listening."""
    wsfail.install()  # a refused frame closes with 1007/1002 instead of dropping TCP
    server = Server(daemon)
    cfg = server.config
    ssl_context = None
    if cfg.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    listeners: list[Any] = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]
    ws_server = WebSocketServer(
        server.handle,
        listeners,
        message_queue_size=4,
        max_message_size=cfg.max_message_size,
        connect_timeout=cfg.handshake_timeout,
        disconnect_timeout=2.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(ws_server.run)
        endpoint = ws_server.listeners[0]
        server.port = endpoint.port  # type: ignore[union-attr]
        scheme = "wss" if ssl_context else "ws"
        host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
        daemon.url = f"{scheme}://{host}:{server.port}{PATH}"
        daemon.on_shutdown.append(server.close_all)
        nursery.start_soon(server.heartbeats)
        if server.tokens.generated_file:
            log.info(
                "no tokens configured: clients use the token in %s", server.tokens.generated_file
            )
        log.info("listening on %s", daemon.url)
        task_status.started(server)
