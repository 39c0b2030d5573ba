"""dagd.client: reconnecting, backoff, heartbeats, replay without gaps.

The first half drives the client with a fake opener (no I/O) under trio's MockClock, so every
delay is checked exactly. The second half runs a consumer against a real `dagd serve` process
that is stopped with SIGTERM and with kill -9 while runs go on, and compares what the consumer
got with the daemon's stored event log.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from clienthelp import DaemonProc, await_for
from trio_websocket import CloseReason, ConnectionClosed

from dagd.client import (
    AuthFailed,
    Client,
    ClientError,
    Connected,
    ConnectionLost,
    GapRepaired,
    NotConnected,
    connect,
)
from dagd.core.backoff import ReconnectBackoff
from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import RunStatus, StepStatus
from dagd.core.protocol.answers import (
    AuthSuccess,
    DagList,
    DagSummary,
    Error,
    Heartbeat,
    Pong,
    ReplayComplete,
    RunList,
    SnapshotComplete,
    Subscribed,
    Triggered,
)
from dagd.core.protocol.codec import to_wire
from dagd.core.protocol.codes import ErrorCode, Role
from dagd.core.protocol.events import event_to_wire
from dagd.core.protocol.requests import Ping
from dagd.core.records import RunRecord

URL = "ws://daemon.invalid/api/v1/ws"
SEED = 20240601
T0 = 1_700_000_000.0
CLOSE = object()  # pushed into a FakeWS: the "server" closes the connection (1001)

# ------------------------------------------------------------------ fakes


def error_event(seq: int | None, dag: str = "etl", run: str = "r1") -> DagEvent:
    return ErrorEvent(dag, run, "step", f"boom {seq}", T0 + (seq or 0), seq)


def wire(event: DagEvent) -> dict[str, Any]:
    return event_to_wire(event)


class FakeWS:
    """Enough of a trio-websocket connection for the client: `send_message` records what the
    client sent and lets `handler` push answers; `get_message` returns pushed frames in order
    (waiting forever when there are none) and raises ConnectionClosed on CLOSE."""

    def __init__(self, handler: Callable[[FakeWS, dict[str, Any]], None]) -> None:
        self.handler = handler
        self.sent: list[dict[str, Any]] = []
        self._send, self._recv = trio.open_memory_channel[object](math.inf)
        self.closed_at: float | None = None

    def push(self, frame: object) -> None:
        self._send.send_nowait(frame)

    async def send_message(self, text: str) -> None:
        message = json.loads(text)
        self.sent.append(message)
        self.handler(self, message)

    async def get_message(self) -> str:
        frame = await self._recv.receive()
        if frame is CLOSE:
            raise ConnectionClosed(CloseReason(1001, "going away"))
        return json.dumps(frame)

    def types_sent(self) -> list[str]:
        return [m["type"] for m in self.sent]


def server(
    *,
    seq: int = 0,
    after_subscribe: Sequence[object] = (),
    replay: Callable[[int], list[object]] | None = None,
    snapshot: Sequence[object] = (),
    answers: dict[str, dict[str, Any]] | None = None,
    on_request: Callable[[FakeWS, dict[str, Any]], None] | None = None,
) -> Callable[[FakeWS, dict[str, Any]], None]:
    """A handler that behaves like the daemon: auth_success, subscribed (plus any frames that
    follow it), replay answered by `replay(since)`, snapshot, and canned request answers."""

    def handle(ws: FakeWS, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "auth":
            ws.push(to_wire(AuthSuccess(Role.OPERATE, seq)))
        elif kind == "subscribe":
            ws.push(to_wire(Subscribed(sorted(message["dagIds"]))))
            for frame in after_subscribe:
                ws.push(frame)
            if "since" in message:  # subscribe + replay in one step
                frames = replay(message["since"]) if replay else [to_wire(ReplayComplete(seq))]
                for frame in frames:
                    ws.push(frame)
        elif kind == "replay":
            frames = replay(message["since"]) if replay else [to_wire(ReplayComplete(seq))]
            for frame in frames:
                ws.push(frame)
        elif kind == "snapshot":
            for frame in snapshot:
                ws.push(frame)
        elif on_request is not None:
            on_request(ws, message)
        elif answers and kind in answers:
            ws.push({**answers[kind], "requestId": message["requestId"]})

    return handle


def refuse(ws: FakeWS, message: dict[str, Any]) -> None:
    if message["type"] == "auth":
        ws.push(to_wire(Error(ErrorCode.AUTH_FAILED, "invalid token", T0)))
        ws.push(CLOSE)


class FakeOpener:
    """Stands in for open_websocket_url. `plan` says what each connection attempt does: an
    exception to raise, or a FakeWS (or a callable making one) to connect to; the last entry
    repeats. `feeders` may start a task per connection (it gets the FakeWS)."""

    def __init__(self, plan: list[object]) -> None:
        self.plan = plan
        self.calls: list[float] = []  # trio.current_time() of each attempt
        self.sockets: list[FakeWS] = []
        self.kwargs: list[dict[str, Any]] = []
        self.feeder: Callable[[FakeWS], Any] | None = None

    def __call__(self, url: str, **kwargs: Any) -> Any:
        assert url == URL
        self.kwargs.append(kwargs)
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[FakeWS]:
        self.calls.append(trio.current_time())
        step = self.plan[min(len(self.calls), len(self.plan)) - 1]
        if isinstance(step, BaseException):
            raise step
        ws = step() if callable(step) and not isinstance(step, FakeWS) else step
        assert isinstance(ws, FakeWS)
        self.sockets.append(ws)
        try:
            async with trio.open_nursery() as nursery:
                if self.feeder is not None:
                    nursery.start_soon(self.feeder, ws)
                yield ws
                nursery.cancel_scope.cancel()
        finally:
            ws.closed_at = trio.current_time()


def refused() -> OSError:
    return OSError(111, "Connection refused")


@asynccontextmanager
async def fake_client(opener: FakeOpener, **kwargs: Any) -> AsyncIterator[Client]:
    kwargs.setdefault("rng", random.Random(SEED))
    kwargs.setdefault("dag_ids", ["etl"])
    async with connect(URL, "secret", _opener=opener, **kwargs) as client:
        yield client


async def collect(client: Client, stop: Callable[[list[Any]], bool]) -> list[tuple[float, Any]]:
    """(trio time, item) for each item until `stop(items)` is true."""
    got: list[tuple[float, Any]] = []
    async for item in client:
        got.append((trio.current_time(), item))
        if stop([i for _, i in got]):
            break
    return got


def losses(items: list[Any]) -> list[ConnectionLost]:
    return [i for i in items if isinstance(i, ConnectionLost)]


# ---------------------------------------------------------------- backoff


async def test_backoff_grows_with_full_jitter_and_waits_exactly_retry_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opener = FakeOpener([refused()])
    async with fake_client(opener) as client:
        got = await collect(client, lambda items: len(items) == 9)
    lost = [item for _, item in got]
    assert all(isinstance(item, ConnectionLost) for item in lost)
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30, 30]
    mirror = random.Random(SEED)  # full jitter: uniform(0, ceiling) from the same stream
    for n, (item, ceiling) in enumerate(zip(lost, ceilings, strict=True), 1):
        assert item.attempt == n
        assert 0 <= item.retry_in <= ceiling
        assert item.retry_in == ceiling * mirror.random()
        assert item.code == "connection_error"
        assert item.message == "cannot connect: Connection refused"
        shape = item.to_wire()
        assert shape["type"] == "error" and shape["code"] == "connection_error"
        assert shape["message"].endswith(f"retrying in {item.retry_in:.1f}s")
        assert shape["timestamp"].endswith("Z")
    # Jitter really spreads the delays (not all at the ceiling, not all equal).
    assert len({round(i.retry_in, 6) for i in lost}) == len(lost)
    # The first attempt is immediate; each next attempt comes exactly retry_in later.
    assert opener.calls[0] == 0
    gaps = [b - a for a, b in zip(opener.calls, opener.calls[1:], strict=False)]
    for gap, item in zip(gaps, lost, strict=False):
        assert gap == pytest.approx(item.retry_in, abs=1e-9)
    # Each ConnectionLost is reported when the attempt fails, before the wait.
    for (when, _), call in zip(got, opener.calls, strict=False):
        assert when == pytest.approx(call, abs=1e-9)


async def test_backoff_resets_after_a_successful_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def healthy_then_closed() -> FakeWS:
        return FakeWS(server(seq=7, after_subscribe=[CLOSE]))

    plan: list[object] = [refused(), refused(), refused(), healthy_then_closed, refused()]
    opener = FakeOpener(plan)
    async with fake_client(opener) as client:
        got = await collect(client, lambda items: len(losses(items)) == 6)
    items = [item for _, item in got]
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["ConnectionLost"] * 3 + ["Connected"] + ["ConnectionLost"] * 3
    assert items[3] == Connected(seq=7, reconnect=False)
    lost = losses(items)
    mirror = random.Random(SEED)
    for item, ceiling in zip(lost, [1, 2, 4, 1, 2, 4], strict=True):
        assert item.retry_in == ceiling * mirror.random()
    assert lost[3].message == "the daemon is shutting down"  # the 1001 close
    assert client.backoff.failures == 3
    # The wait after the dropped connection starts from the base again.
    assert opener.calls[4] - opener.sockets[0].closed_at == pytest.approx(lost[3].retry_in)


async def test_reconnect_resends_auth_and_subscribe_then_replays_from_last_seq(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = FakeWS(server(seq=10, after_subscribe=[wire(error_event(11)), CLOSE]))

    def replay(since: int) -> list[object]:
        return [wire(error_event(12)), to_wire(ReplayComplete(12))]

    second = FakeWS(server(seq=12, replay=replay))
    opener = FakeOpener([first, second])
    async with fake_client(opener, dag_ids=["etl", "other"]) as client:
        got = await collect(client, lambda items: any(getattr(i, "seq", 0) == 12 for i in items))
    items = [i for _, i in got]
    assert [type(i).__name__ for i in items] == [
        "Connected",
        "ErrorEvent",
        "ConnectionLost",
        "Connected",
        "ErrorEvent",
    ]
    assert items[0] == Connected(10, reconnect=False)
    assert items[3] == Connected(11, reconnect=True)
    for ws in (first, second):
        assert ws.sent[0] == {"type": "auth", "token": "secret"}
        assert ws.types_sent() == ["auth", "subscribe"]
    assert first.sent[1] == {"type": "subscribe", "dagIds": ["etl", "other"]}  # from now on
    # the reconnect subscribes and replays from the last delivered seq in one step
    assert second.sent[1] == {"type": "subscribe", "dagIds": ["etl", "other"], "since": 11}
    assert client.connections == 2


# ------------------------------------------------------------ auth_failed


async def test_auth_failed_ends_iteration_and_stops_reconnecting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opener = FakeOpener([refused(), refused(), lambda: FakeWS(refuse)])
    items: list[Any] = []
    async with fake_client(opener) as client:
        with pytest.raises(AuthFailed) as info:
            async for item in client:
                items.append(item)
        assert info.value.code is ErrorCode.AUTH_FAILED
        await trio.sleep(3600)  # an hour later: still no further attempt
        assert len(opener.calls) == 3
    assert [type(i).__name__ for i in items] == ["ConnectionLost", "ConnectionLost"]
    assert isinstance(client.failure, AuthFailed)
    assert opener.sockets[0].types_sent() == ["auth"]


async def test_auth_failed_on_first_connection_raises_out_of_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opener = FakeOpener([lambda: FakeWS(refuse)])
    with pytest.raises(AuthFailed):
        async with fake_client(opener) as client:
            async for _ in client:
                pass
    assert len(opener.calls) == 1


# ------------------------------------------------------------- heartbeats


async def test_silence_for_two_and_a_half_heartbeat_intervals_is_a_dead_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opener = FakeOpener([lambda: FakeWS(server(seq=3)), refused()])
    async with fake_client(opener, heartbeat_interval=4.0) as client:
        got = await collect(client, lambda items: len(items) == 2)
    (t_connected, connected), (t_lost, lost) = got
    assert isinstance(connected, Connected) and isinstance(lost, ConnectionLost)
    assert t_lost - t_connected == pytest.approx(10.0, abs=1e-9)
    assert opener.sockets[0].closed_at == pytest.approx(t_connected + 10.0, abs=1e-9)
    assert lost.message == "no heartbeat for 10s"
    assert lost.retry_in <= 1  # the first failure after a healthy connection


async def test_every_message_resets_the_heartbeat_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    beats: list[float] = []

    async def heartbeats(ws: FakeWS) -> None:
        for _ in range(4):
            await trio.sleep(9.9)  # just under 2.5 x 4 s
            beats.append(trio.current_time())
            ws.push(to_wire(Heartbeat(T0)))

    opener = FakeOpener([lambda: FakeWS(server(seq=3)), refused()])
    opener.feeder = heartbeats
    async with fake_client(opener, heartbeat_interval=4.0) as client:
        got = await collect(client, lambda items: len(items) == 2)
    t_lost = got[1][0]
    assert len(beats) == 4
    assert t_lost - beats[-1] == pytest.approx(10.0, abs=1e-9)


# ------------------------------------------------- replay, de-duplication


async def test_live_events_queued_before_the_replay_do_not_hide_older_replayed_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """docs/protocol.md: live events queued before the replay request was processed are sent
    first. After a reconnect the daemon may thus send live seq 15 before replaying 13..16;
    the client must still deliver 13 and 14, in order, once each."""
    first = FakeWS(server(seq=10, after_subscribe=[wire(error_event(11)), wire(error_event(12))]))

    def replay(since: int) -> list[object]:
        assert since == 12
        return [
            *(wire(error_event(s)) for s in (13, 14, 15, 16)),
            to_wire(ReplayComplete(16)),
            wire(error_event(16)),  # live, already replayed
            wire(error_event(17)),
        ]

    second = FakeWS(server(seq=16, after_subscribe=[wire(error_event(15))], replay=replay))
    opener = FakeOpener([first, second])

    async def drop_first(ws: FakeWS) -> None:
        if ws is first:
            await trio.sleep(1)
            ws.push(CLOSE)

    opener.feeder = drop_first
    async with fake_client(opener) as client:
        got = await collect(client, lambda items: any(getattr(i, "seq", 0) == 17 for i in items))
    seqs = [i.seq for _, i in got if isinstance(i, ErrorEvent)]
    assert seqs == [11, 12, 13, 14, 15, 16, 17]


async def test_replay_unavailable_falls_back_to_a_snapshot_and_reports_the_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = "manual__2024-01-01T00:00:00.000000+00:00"
    snap: list[DagEvent] = [
        DagRunStatusEvent("etl", run, RunStatus.RUNNING, T0),
        StepStatusEvent("etl", run, "a", StepStatus.RUNNING, T0, None, None, 0, None, T0),
        DagRunProgressEvent("etl", run, 1, 0, 1, 0, 0, 0.0, T0),
    ]

    def replay(since: int) -> list[object]:
        return [to_wire(Error(ErrorCode.REPLAY_UNAVAILABLE, "gone", T0, oldest_seq=50))]

    ws = FakeWS(
        server(
            seq=60,
            replay=replay,
            snapshot=[*(wire(e) for e in snap), to_wire(SnapshotComplete(60))],
        )
    )
    opener = FakeOpener([ws])

    async def live_after_snapshot(ws: FakeWS) -> None:
        await trio.sleep(1)
        ws.push(wire(error_event(59)))  # older than the snapshot: dropped
        ws.push(wire(error_event(61)))

    opener.feeder = live_after_snapshot
    async with fake_client(opener, since=5) as client:
        got = await collect(client, lambda items: isinstance(items[-1], ErrorEvent))
    items = [i for _, i in got]
    assert [type(i).__name__ for i in items] == ["Connected", "GapRepaired", "ErrorEvent"]
    assert items[0] == Connected(5, reconnect=False)
    assert items[1] == GapRepaired(snap, 60)
    assert items[2].seq == 61
    assert ws.types_sent() == ["auth", "subscribe", "snapshot"]
    assert ws.sent[1]["since"] == 5


async def test_replay_ahead_falls_back_to_a_snapshot_and_restarts_the_cursor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The daemon's log is not the one the cursor came from (it answers `replay_ahead`): the
    client takes a snapshot, reports GapRepaired with the daemon's (smaller) seq, and then
    delivers this log's events although their seqs are below its old cursor."""
    snap: list[DagEvent] = [DagRunStatusEvent("etl", "r7", RunStatus.SUCCESS, T0)]

    def replay(since: int) -> list[object]:
        assert since == 500
        return [
            wire(error_event(58)),  # live, queued before the error: delivered, not dropped
            to_wire(Error(ErrorCode.REPLAY_AHEAD, "seq 500 is beyond ... (60)", T0)),
        ]

    ws = FakeWS(
        server(
            seq=60,
            replay=replay,
            snapshot=[wire(snap[0]), to_wire(SnapshotComplete(60))],
        )
    )
    opener = FakeOpener([ws])

    async def live_after_snapshot(ws: FakeWS) -> None:
        await trio.sleep(1)
        ws.push(wire(error_event(59)))  # older than the snapshot: dropped
        ws.push(wire(error_event(61)))
        ws.push(wire(error_event(62)))

    opener.feeder = live_after_snapshot
    async with fake_client(opener, since=500) as client:
        got = await collect(client, lambda items: getattr(items[-1], "seq", None) == 62)
    items = [i for _, i in got]
    assert [type(i).__name__ for i in items] == [
        "Connected",
        "ErrorEvent",
        "GapRepaired",
        "ErrorEvent",
        "ErrorEvent",
    ]
    assert items[0] == Connected(500, reconnect=False)
    assert items[1].seq == 58
    assert items[2] == GapRepaired(snap, 60)
    assert [items[3].seq, items[4].seq] == [61, 62]
    assert client.last_seq == 62
    assert ws.types_sent() == ["auth", "subscribe", "snapshot"]


async def test_initial_snapshot_then_live_events(autojump_clock: trio.testing.MockClock) -> None:
    snap = [DagRunStatusEvent("etl", "r9", RunStatus.SUCCESS, T0)]
    ws = FakeWS(
        server(
            seq=40,
            after_subscribe=[],
            snapshot=[wire(snap[0]), to_wire(SnapshotComplete(41))],
        )
    )
    opener = FakeOpener([ws])

    async def live(ws: FakeWS) -> None:
        await trio.sleep(1)
        for s in (41, 42):
            ws.push(wire(error_event(s)))

    opener.feeder = live
    async with fake_client(opener, initial_snapshot=True) as client:
        events = []
        async for event in client.events():
            events.append(event)
            if len(events) == 2:
                break
    assert events == [snap[0], error_event(42)]
    assert ws.types_sent() == ["auth", "subscribe", "snapshot"]


# ----------------------------------------------------------------- requests


async def test_a_request_waits_for_a_connection_through_several_failed_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    etl = DagSummary("etl", "", None, None, ["a"], [], {})
    dags = to_wire(DagList([etl]))

    def ws() -> FakeWS:
        return FakeWS(server(answers={"list_dags": dags}))

    opener = FakeOpener([refused(), refused(), refused(), ws])
    async with fake_client(opener, request_timeout=10.0) as client:
        # Issued before the first attempt; the backoff waits add up to less than 7 s.
        assert await client.list_dags() == [etl]
        assert trio.current_time() < 7
    assert len(opener.calls) == 4
    assert opener.sockets[0].sent[-1]["type"] == "list_dags"
    assert opener.sockets[0].sent[-1]["requestId"]


async def test_a_request_without_a_daemon_fails_with_not_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    opener = FakeOpener([refused()])
    async with fake_client(opener, request_timeout=5.0) as client:
        with pytest.raises(NotConnected) as info:
            await client.trigger("etl")
        assert trio.current_time() == pytest.approx(5.0)
    assert "cannot reach the daemon" in info.value.message


async def test_a_connection_lost_during_a_request_raises_not_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def drop_on_trigger(ws: FakeWS, message: dict[str, Any]) -> None:
        ws.push(CLOSE)

    opener = FakeOpener([lambda: FakeWS(server(on_request=drop_on_trigger)), refused()])
    async with fake_client(opener) as client:
        with pytest.raises(NotConnected) as info:
            await client.trigger("etl", {"date": "2024-01-01"})
    assert "may or may not have been applied" in info.value.message
    assert opener.sockets[0].sent[-1]["type"] == "trigger"


async def test_request_errors_carry_the_protocol_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def unknown(ws: FakeWS, message: dict[str, Any]) -> None:
        error = Error(ErrorCode.UNKNOWN_DAG, "no DAG 'nope'", T0, request_id=message["requestId"])
        ws.push(to_wire(error))

    opener = FakeOpener([lambda: FakeWS(server(on_request=unknown))])
    async with fake_client(opener) as client:
        with pytest.raises(ClientError) as info:
            await client.trigger("nope")
    assert info.value.code is ErrorCode.UNKNOWN_DAG
    assert not isinstance(info.value, NotConnected)


async def test_requests_are_objects_or_their_wire_dicts_and_answers_are_objects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`request` takes a request object or its wire dict and returns the answer object that
    ANSWER_TO pairs with it; a malformed dict is refused before anything is sent, and an
    answer of the wrong type is an error, not a silent success."""

    def answer(ws: FakeWS, message: dict[str, Any]) -> None:
        rid = message["requestId"]
        if message["type"] == "ping":
            ws.push(to_wire(Pong(T0, request_id=rid)))
        elif message["type"] == "trigger":
            ws.push(to_wire(Triggered(message["dagId"], "manual__1", request_id=rid)))
        elif message["type"] == "cancel":
            ws.push(to_wire(Pong(T0, request_id=rid)))  # the wrong answer
        elif message["type"] == "list_runs":
            run = RunRecord("etl", "manual__1", RunStatus.QUEUED, {}, T0, None, None)
            ws.push(to_wire(RunList([run], request_id=rid)))

    opener = FakeOpener([lambda: FakeWS(server(on_request=answer))])
    async with fake_client(opener) as client:
        assert await client.request(Ping()) == Pong(T0, request_id="c1")
        assert await client.request({"type": "ping"}) == Pong(T0, request_id="c2")
        assert await client.trigger("etl", {"n": 1}) == "manual__1"
        runs = await client.list_runs("etl", 5)
        assert [(r.run_id, r.status, r.started_at) for r in runs] == [
            ("manual__1", RunStatus.QUEUED, None)
        ]
        with pytest.raises(ClientError) as info:
            await client.request({"type": "ping", "extra": 1})
        assert info.value.code is ErrorCode.INVALID_MESSAGE
        with pytest.raises(ClientError) as info:
            await client.cancel("manual__1")
        assert info.value.code is ErrorCode.INVALID_MESSAGE
    sent = opener.sockets[0].sent
    assert [m["type"] for m in sent] == [
        "auth", "subscribe", "ping", "ping", "trigger", "list_runs", "cancel"
    ]  # fmt: skip
    assert sent[4] == {"type": "trigger", "dagId": "etl", "params": {"n": 1}, "requestId": "c3"}
    assert sent[5] == {"type": "list_runs", "dagId": "etl", "limit": 5, "requestId": "c4"}


async def test_frames_of_unknown_types_only_prove_the_link_is_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = FakeWS(server(seq=3, after_subscribe=[{"type": "from_a_newer_daemon", "x": 1}]))
    opener = FakeOpener([ws])

    async def live(ws: FakeWS) -> None:
        await trio.sleep(1)
        ws.push(wire(error_event(4)))

    opener.feeder = live
    async with fake_client(opener) as client:
        got = await collect(client, lambda items: isinstance(items[-1], ErrorEvent))
    assert [type(i).__name__ for _, i in got] == ["Connected", "ErrorEvent"]
    assert len(opener.calls) == 1


def test_connection_lost_has_the_error_shape() -> None:
    lost = ConnectionLost("cannot connect: refused", T0, 1.25, 1)
    assert lost.code is ErrorCode.CONNECTION_ERROR
    assert lost.to_wire() == {
        "type": "error",
        "code": "connection_error",
        "message": "cannot connect: refused; retrying in 1.2s",
        "timestamp": "2023-11-14T22:13:20.000Z",
    }


# ================================================== against a real daemon

STREAM_DAGS = {
    "stream": """
        [steps.a]
        command = "true"
        [steps.b]
        command = "sleep 0.2"
        depends_on = ["a"]
        [steps.c]
        command = "true"
        depends_on = ["a"]
        [steps.d]
        command = "true"
        depends_on = ["b", "c"]
    """,
    "other": """
        [steps.x]
        command = "true"
    """,
}
FAST = {"base": 0.05, "cap": 0.25}


def fast_backoff() -> ReconnectBackoff:
    return ReconnectBackoff(FAST["base"], FAST["cap"], random.Random(SEED))


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    with DaemonProc(tmp_path, STREAM_DAGS) as d:
        yield d


class Consumer:
    """Collects every item of a client into `items` (in a background task)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def events(self) -> list[DagEvent]:
        return [
            i for i in self.items if not isinstance(i, ConnectionLost | Connected | GapRepaired)
        ]

    def last_seq(self) -> int:
        events = self.events()
        return events[-1].seq if events else 0

    def count(self, kind: type) -> int:
        return sum(isinstance(i, kind) for i in self.items)

    async def run(self, client: Client) -> None:
        async for item in client:
            self.items.append(item)


def finished_runs(events: list[DagEvent]) -> set[str]:
    return {e.run_id for e in events if isinstance(e, DagRunStatusEvent) and e.status.finished}


def seen_runs(events: list[DagEvent]) -> set[str]:
    return {e.run_id for e in events if isinstance(e, DagRunStatusEvent)}


async def trigger_runs(trigger: Client, n: int) -> list[str]:
    return [await trigger.trigger("stream") for _ in range(n)]


async def test_consumer_gets_the_stored_log_exactly_across_sigterm_and_kill_9(
    daemon: DaemonProc,
) -> None:
    daemon.start()
    await daemon.await_ready()
    consumer = Consumer()
    run_ids: list[str] = []
    async with (
        connect(daemon.url, daemon.token, ["stream"], since=0, backoff=fast_backoff()) as client,
        connect(daemon.url, daemon.token, ["other"], backoff=fast_backoff()) as trigger,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(consumer.run, client)
        # Runs queue up (max_active_runs = 1), so the daemon is busy when it is stopped.
        run_ids += await trigger_runs(trigger, 3)
        await await_for(
            lambda: any(getattr(e, "status", None) == "running" for e in consumer.events()),
            what="a step to run",
        )
        await daemon.astop(signal.SIGTERM)
        await await_for(lambda: consumer.count(ConnectionLost) >= 1, what="ConnectionLost")

        daemon.start()
        await daemon.await_ready()
        await await_for(lambda: consumer.count(Connected) >= 2, what="reconnect after SIGTERM")
        run_ids += await trigger_runs(trigger, 3)
        await await_for(
            lambda: any(
                e.run_id == run_ids[3] and getattr(e, "status", None) == "running"
                for e in consumer.events()
            ),
            what="a run after the restart",
        )
        # The daemon answers `triggered` before the queued run is committed: wait until it
        # is (the consumer only ever gets committed events), or kill -9 may lose the run.
        await await_for(lambda: set(run_ids) <= seen_runs(consumer.events()), what="queued")
        await daemon.astop(signal.SIGKILL)
        assert daemon.proc is not None and daemon.proc.returncode == -signal.SIGKILL
        await await_for(lambda: consumer.count(ConnectionLost) >= 2, what="ConnectionLost")

        daemon.start()
        await daemon.await_ready()
        run_ids += await trigger_runs(trigger, 2)
        await await_for(
            lambda: set(run_ids) <= finished_runs(consumer.events()),
            timeout=20,
            what="every run to end",
        )
        # Quiet now: the consumer has caught up with the stored log.
        await await_for(
            lambda: consumer.last_seq() == daemon.stored_events("stream")[-1][0],
            what="the consumer to catch up",
        )
        nursery.cancel_scope.cancel()

    stored = daemon.stored_events("stream")
    got = [(e.seq, event_to_wire(e)) for e in consumer.events()]
    seqs = [seq for seq, _ in got]
    assert seqs == sorted(set(seqs)), "duplicates or out of order"
    assert [s for s, _ in got] == [s for s, _ in stored]
    assert [m["type"] for _, m in got] == [m["type"] for _, m in stored]
    assert got == stored
    # Every stored event of the DAG was delivered; the other DAG's were not.
    all_rows = daemon.query("SELECT seq, dag_id FROM events ORDER BY seq")
    assert seqs == [s for s, dag in all_rows if dag == "stream"]
    assert consumer.count(GapRepaired) == 0
    assert consumer.count(Connected) == 3
    lost = [i for i in consumer.items if isinstance(i, ConnectionLost)]
    assert lost[0].message == "the daemon is shutting down"  # SIGTERM: close code 1001
    assert "connection closed (1006)" in [i.message for i in lost]  # kill -9: no close frame
    assert all(i.retry_in <= FAST["cap"] for i in lost)
    statuses = daemon.run_statuses("stream")
    assert set(statuses) == set(run_ids)
    # The run stopped by SIGTERM failed and the ones queued behind it were cancelled; the run
    # killed by kill -9 was closed out as failed by the next daemon; the rest succeeded.
    assert {"failed", "success"} <= set(statuses.values()) <= {"success", "failed", "cancelled"}
    interrupted = [
        e
        for e in consumer.events()
        if isinstance(e, ErrorEvent) and e.error == "interrupted: the daemon stopped"
    ]
    assert len({e.run_id for e in interrupted}) >= 2


async def test_replay_unavailable_after_pruning_yields_gap_repaired(
    daemon: DaemonProc,
) -> None:
    daemon.start()
    await daemon.await_ready()
    async with connect(daemon.url, daemon.token, ["other"], backoff=fast_backoff()) as c:
        for _ in range(3):
            await c.trigger("other")
        await await_for(
            lambda: (
                set(daemon.run_statuses("other").values()) == {"success"}
                and len(daemon.run_statuses("other")) == 3
            ),
            what="three runs",
        )
    await daemon.astop(signal.SIGTERM)
    seqs = [s for s, _ in daemon.stored_events("other")]
    assert len(seqs) > 6
    cut = seqs[len(seqs) // 2]
    conn = sqlite3.connect(daemon.db)
    with conn:
        conn.execute("DELETE FROM events WHERE seq <= ?", (cut,))
    conn.close()

    daemon.start()
    await daemon.await_ready()
    consumer = Consumer()
    async with (
        connect(
            daemon.url, daemon.token, ["other"], since=seqs[1], backoff=fast_backoff()
        ) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(consumer.run, client)
        await await_for(lambda: consumer.count(GapRepaired) == 1, what="GapRepaired")
        run_id = await client.trigger("other")
        await await_for(lambda: run_id in finished_runs(consumer.events()), what="a live run")
        nursery.cancel_scope.cancel()

    assert isinstance(consumer.items[0], Connected)
    gap = consumer.items[1]
    assert isinstance(gap, GapRepaired)
    assert gap.seq >= seqs[-1]
    assert all(e.seq is None for e in gap.events)
    events = consumer.events()
    assert events, "live events after the gap"
    assert all(e.seq is not None and e.seq > gap.seq for e in events)
    assert [e.seq for e in events] == [s for s, _ in daemon.stored_events("other", gap.seq)]
    assert isinstance(events[-1], DagRunStatusEvent) and events[-1].status == "success"


async def test_a_restored_backup_behind_the_cursor_yields_gap_repaired(
    daemon: DaemonProc, tmp_path: Path
) -> None:
    """The daemon's state file is restored from an older backup while a client follows it:
    the client's cursor is ahead of the restored log. It gets a GapRepaired (the daemon's
    snapshot) and then every new event of the restored log, whose seqs are below its cursor."""
    backup = tmp_path / "backup.sqlite3"
    daemon.start()
    await daemon.await_ready()
    consumer = Consumer()
    async with (
        connect(daemon.url, daemon.token, ["other"], since=0, backoff=fast_backoff()) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(consumer.run, client)
        first = await client.trigger("other")
        await await_for(lambda: first in finished_runs(consumer.events()), what="a first run")
        await daemon.astop(signal.SIGTERM)
        source, target = sqlite3.connect(daemon.db), sqlite3.connect(backup)
        with target:
            source.backup(target)  # what an operator's backup job does
        source.close()
        target.close()

        daemon.start()
        await daemon.await_ready()
        later = [await client.trigger("other") for _ in range(3)]
        await await_for(lambda: set(later) <= finished_runs(consumer.events()), what="3 runs")
        cursor = consumer.last_seq()
        await daemon.astop(signal.SIGTERM)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{daemon.db}{suffix}").unlink(missing_ok=True)
        backup.rename(daemon.db)  # the restore

        daemon.start()
        await daemon.await_ready()
        await await_for(lambda: consumer.count(GapRepaired) == 1, what="GapRepaired")
        gap = next(i for i in consumer.items if isinstance(i, GapRepaired))
        assert gap.seq < cursor
        assert not set(later) & {e.run_id for e in gap.events}  # lost with the restore
        after = await client.trigger("other")
        await await_for(lambda: after in finished_runs(consumer.events()), what="a live run")
        nursery.cancel_scope.cancel()

    index = consumer.items.index(gap)
    events = [i for i in consumer.items[index + 1 :] if isinstance(i, DagEvent)]
    assert events and all(e.seq is not None and gap.seq < e.seq for e in events)
    assert events[-1].seq is not None and events[-1].seq < cursor  # below the old cursor
    assert [e.seq for e in events] == [s for s, _ in daemon.stored_events("other", gap.seq)]
