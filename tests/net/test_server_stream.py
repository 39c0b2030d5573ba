"""The event stream over WebSocket: subscriptions, replay, snapshot, slow consumers,
heartbeats and shutdown, against a real daemon (sockets on 127.0.0.1, SQLite in tmp_path).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from wshelp import (
    DAGS,
    KINDS,
    OP_TOKEN,
    Aio,
    events_of,
    harness,
    make_config,
    publish_committed,
    publish_errors,
    running,
    server_of,
    stored_seqs,
    trio_client,
    url_of,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

import dagd.net.connection as connection_module
from dagd.net.server import Server


@pytest.fixture
def aio():
    loop = Aio()
    yield loop
    loop.close()


async def until_pong(client, timeout: float = 10.0) -> list[dict]:
    """Send a ping; return every frame received before its pong (everything queued before)."""
    await client.send({"type": "ping", "requestId": "sync"})
    frames = []
    with trio.fail_after(timeout):
        while True:
            frame = await client.recv(timeout)
            if frame.get("requestId") == "sync":
                assert frame["type"] == "pong"
                return frames
            frames.append(frame)


def seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in events_of(frames)]


def stored_bodies(daemon, since: int = 0) -> dict[int, dict]:
    rows = daemon.store._read("SELECT seq, body FROM events WHERE seq > ?", (since,))
    return {seq: json.loads(body) for seq, body in rows}


# ------------------------------------------------------------- subscriptions


@pytest.mark.parametrize("kind", KINDS)
async def test_events_flow_only_for_subscribed_dags(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        client = await h.connect(kind)
        idle = await h.connect("trio" if kind == "asyncio" else "asyncio")  # never subscribes
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        a1 = await publish_committed(d, "alpha", 3)
        await publish_committed(d, "beta", 3)
        a2 = await publish_committed(d, "alpha", 2)
        frames = await until_pong(client)
        assert seqs(frames) == a1 + a2
        assert all(f["data"]["dagId"] == "alpha" for f in frames)
        # unsubscribed: nothing more for alpha
        await client.request({"type": "unsubscribe", "dagIds": ["alpha"]})
        await publish_committed(d, "alpha", 2)
        assert await until_pong(client) == []
        # "*" is every DAG, including ones that did not exist when subscribing
        await client.request({"type": "subscribe", "dagIds": ["*"]})
        every = []
        for dag in ["alpha", "beta", "brand-new"]:
            every += await publish_committed(d, dag, 2)
        assert seqs(await until_pong(client)) == every
        # "*" plus a name, then "*" removed: only the name is left
        await client.request({"type": "subscribe", "dagIds": ["beta"]})
        await client.request({"type": "unsubscribe", "dagIds": ["*"]})
        await publish_committed(d, "alpha", 2)
        b = await publish_committed(d, "beta", 2)
        assert seqs(await until_pong(client)) == b
        # a client that never subscribed got no event at all
        assert await until_pong(idle) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_real_run_streams_its_events_as_stored(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        run_id = (await client.request({"type": "trigger", "dagId": "alpha"}))["runId"]
        frames = []
        with trio.fail_after(10):
            while not (
                frames
                and frames[-1]["type"] == "dag_run_status"
                and frames[-1]["data"]["status"] == "success"
            ):
                frames.append(await client.recv())
        frames += await until_pong(client)  # the final progress event, if any
        stored = stored_bodies(h.daemon)
        assert seqs(frames) == sorted(stored)  # every event, in order, no gap
        for frame in frames:
            assert frame == stored[frame["seq"]]  # byte-for-byte what the log holds
            assert frame["data"]["runId"] == run_id
            assert frame["data"]["timestamp"].endswith("Z")
        runs = [f["data"]["status"] for f in frames if f["type"] == "dag_run_status"]
        assert runs == ["queued", "running", "success"]
        steps = [
            (f["data"]["stepId"], f["data"]["status"]) for f in frames if f["type"] == "step_status"
        ]
        assert steps == [
            ("one", "running"),
            ("one", "success"),
            ("two", "running"),
            ("two", "success"),
        ]
        done = [f for f in frames if f["type"] == "step_status"][-1]["data"]
        assert set(done) == {
            "dagId",
            "runId",
            "stepId",
            "status",
            "startTime",
            "endTime",
            "duration",
            "retryCount",
            "error",
            "timestamp",
        }
        assert isinstance(done["duration"], int) and done["error"] is None
        last = [f for f in frames if f["type"] == "dag_run_progress"][-1]["data"]
        assert (last["totalSteps"], last["completedSteps"], last["completionPercentage"]) == (
            2,
            2,
            100.0,
        )


# -------------------------------------------------------------------- replay


@pytest.mark.parametrize("kind", KINDS)
async def test_replay_after_reconnect_sends_exactly_the_missed_events(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        for dag in ["alpha", "beta"] * 3:
            await publish_committed(d, dag, 2)
        seen = seqs(await until_pong(client))
        k = seen[-1]
        await client.close()
        # missed while away: both DAGs, and a real run of alpha
        for dag in ["beta", "alpha"] * 4:
            await publish_committed(d, dag, 3)
        run_id = (await (await h.connect("trio")).request({"type": "trigger", "dagId": "alpha"}))[
            "runId"
        ]
        await h.run_status(run_id, "success")
        await d.store.flush()
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        await client.send({"type": "replay", "since": k, "requestId": "r"})
        frames = []
        with trio.fail_after(10):
            while True:
                frame = await client.recv()
                if frame["type"] == "replay_complete":
                    break
                frames.append(frame)
        assert frame == {"type": "replay_complete", "seq": d.store.committed_seq, "requestId": "r"}
        expected = stored_seqs(d, {"alpha"}, since=k)
        assert seqs(frames) == expected
        assert len(frames) == len(expected)  # nothing but the events
        stored = stored_bodies(d, k)
        assert all(f == stored[f["seq"]] for f in frames)
        # live events continue after it, with larger seqs only
        more = await publish_committed(d, "alpha", 3)
        assert seqs(await until_pong(client)) == more
        assert more[0] > frame["seq"]
        # replay from the present: nothing; with no subscription: nothing either
        assert await client.request({"type": "replay", "since": d.store.committed_seq}) == {
            "type": "replay_complete",
            "seq": d.store.committed_seq,
        }
        await client.request({"type": "unsubscribe", "dagIds": ["alpha"]})
        await client.send({"type": "replay", "since": 0})
        assert (await client.recv())["type"] == "replay_complete"
        # a "*" subscription replays every DAG
        await client.request({"type": "subscribe", "dagIds": ["*"]})
        await client.send({"type": "replay", "since": k})
        frames = await until_pong(client)
        assert frames[-1]["type"] == "replay_complete"
        assert seqs(frames) == stored_seqs(d, since=k)


async def test_replay_during_a_burst_loses_and_duplicates_nothing(
    tmp_path: Path, aio: Aio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events committed at every moment around a replay: before the request is processed
    (sent live first; the replay repeats them, as docs/protocol.md says), after the request
    but before the replay takes its `until` (covered by the replay, not sent twice), while it
    reads its pages (sent live after replay_complete), and concurrently by a free-running
    publisher."""
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        client = await h.connect("asyncio")
        await client.request({"type": "subscribe", "dagIds": ["a"]})
        publish_errors(d, "a", 10)
        await d.store.flush()
        k = seqs(await until_pong(client))[-1]
        await client.close()
        for _ in range(25):  # 2,500 missed events: three replay pages
            publish_errors(d, "a", 50)
            publish_errors(d, "b", 50)
        await d.store.flush()

        burst: list[int] = []

        async def commit_burst(n: int) -> None:
            burst.extend(publish_errors(d, "a", n, "burst"))
            publish_errors(d, "b", n, "burst")
            await d.store.flush()

        original_replay = connection_module.Connection._replay
        original_page = d.store.events_page

        async def replay_after_a_burst(self, job) -> None:  # type: ignore[no-untyped-def]
            await commit_burst(7)  # queued behind the job, seqs below the replay's `until`
            await original_replay(self, job)

        async def page_after_a_burst(*args, **kw):  # type: ignore[no-untyped-def]
            await commit_burst(3)  # committed while the replay runs: after its `until`
            return await original_page(*args, **kw)

        monkeypatch.setattr(connection_module.Connection, "_replay", replay_after_a_burst)
        monkeypatch.setattr(d.store, "events_page", page_after_a_burst)

        client = await h.connect("trio")
        await client.request({"type": "subscribe", "dagIds": ["a"]})
        early = await publish_committed(d, "a", 5)  # live, before the replay request

        async def free_running() -> None:
            for i in range(40):
                burst.extend(publish_errors(d, "a" if i % 3 else "b", 5, "free"))
                await trio.sleep(0)
                if i % 5 == 0:
                    await d.store.flush()
            await d.store.flush()

        await client.send({"type": "replay", "since": k})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(free_running)
            frames = []
            with trio.fail_after(10):
                while True:
                    frame = await client.recv()
                    frames.append(frame)
                    if frame["type"] == "replay_complete":
                        break
        frames += await until_pong(client)  # whatever is still live
        at = next(i for i, f in enumerate(frames) if f["type"] == "replay_complete")
        u = frames[at]["seq"]
        before, after = seqs(frames[:at]), seqs(frames[at:])
        expected = stored_seqs(d, {"a"}, since=k)
        assert sorted(set(before) | set(after)) == expected  # nothing lost
        # Live events sent before the request was processed come first, then the replay
        # of (k, u] in order, then live events with larger seqs only, each once.
        assert before == early + [s for s in expected if s <= u]
        assert after == [s for s in expected if s > u]
        # the bursts hit both sides of `until`
        assert any(early[-1] < s <= u for s in burst)
        assert any(s > u for s in burst)


async def test_subscribe_with_since_joins_replay_and_live_in_order(
    tmp_path: Path, aio: Aio
) -> None:
    """The reconnect path: `subscribe` + `since` while a publisher keeps going. The client sees
    every missed and every new event exactly once, in strictly increasing seq order."""
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        client = await h.connect("trio")
        await client.request({"type": "subscribe", "dagIds": ["a"]})
        publish_errors(d, "a", 10)
        await d.store.flush()
        k = seqs(await until_pong(client))[-1]
        await client.close()
        for _ in range(12):  # 1,200 missed events for "a" (and some for "b"): two pages
            publish_errors(d, "a", 100)
            publish_errors(d, "b", 20)
        await d.store.flush()

        async def publisher() -> None:
            for i in range(60):
                publish_errors(d, "a" if i % 4 else "b", 5, "live")
                await trio.sleep(0)
                if i % 7 == 0:
                    await d.store.flush()
            await d.store.flush()

        client = await h.connect("trio")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await client.send({"type": "subscribe", "dagIds": ["a"], "since": k})
            frames = []
            with trio.fail_after(10):
                while True:
                    frame = await client.recv()
                    frames.append(frame)
                    if frame["type"] == "replay_complete":
                        break
        frames += await until_pong(client)
        assert frames[0] == {"type": "subscribed", "dagIds": ["a"]}
        got = seqs(frames)
        assert got == sorted(set(got)), "out of order or repeated"
        assert got == stored_seqs(d, {"a"}, since=k)
        assert len(got) > 1200


async def test_replay_across_a_daemon_restart(tmp_path: Path, aio: Aio) -> None:
    config = make_config(tmp_path)
    async with harness(tmp_path, aio, config=config) as h:
        client = await h.connect("asyncio")
        await client.request({"type": "subscribe", "dagIds": ["*"]})
        first = await publish_committed(h.daemon, "alpha", 10)
        assert seqs(await until_pong(client)) == first
        k = first[4]  # processed only half of them before the daemon went away
        await publish_committed(h.daemon, "beta", 5)
        slow_run = (await client.request({"type": "trigger", "dagId": "slow"}))["runId"]
        await h.run_status(slow_run, "running")
        before_restart = h.daemon.store.committed_seq
    # The run was interrupted by the shutdown; everything was committed before exit.
    async with harness(tmp_path, aio, config=config) as h:
        d = h.daemon
        assert d.store.committed_seq >= before_restart  # seqs are never reused
        later = await publish_committed(d, "alpha", 3)
        assert later[0] > before_restart
        client = await h.connect("trio")
        await client.request({"type": "subscribe", "dagIds": ["*"]})
        await client.send({"type": "replay", "since": k})
        frames = await until_pong(client)
        assert frames[-1] == {"type": "replay_complete", "seq": d.store.committed_seq}
        assert seqs(frames) == stored_seqs(d, since=k)
        assert seqs(frames)[: len(first) - 5] == first[5:]
        statuses = [
            f["data"]["status"]
            for f in frames
            if f["type"] == "dag_run_status" and f["data"]["runId"] == slow_run
        ]
        assert statuses[0] == "queued" and statuses[-1] in ("cancelled", "failed")


@pytest.mark.parametrize("kind", KINDS)
async def test_replay_unavailable_after_pruning(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        published = await publish_committed(d, "alpha", 30)
        deleted = await d.store.prune(keep_count=10, max_age=None)
        assert deleted == 20
        oldest = published[20]
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        for since in [0, 5, oldest - 2]:
            answer = await client.request({"type": "replay", "since": since, "requestId": since})
            assert answer["type"] == "error"
            assert answer["code"] == "replay_unavailable"
            assert answer["oldestSeq"] == oldest
            assert answer["requestId"] == since
            assert "snapshot" in answer["message"]
        # the connection stays usable, and a replay within the retained log works
        await client.send({"type": "replay", "since": oldest - 1})
        frames = await until_pong(client)
        assert seqs(frames) == published[20:]
        assert frames[-1] == {"type": "replay_complete", "seq": published[-1]}
        # a client that is up to date is never told that the log was pruned
        answer = await client.request({"type": "replay", "since": published[-1]})
        assert answer == {"type": "replay_complete", "seq": published[-1]}
        answer = await client.request({"type": "snapshot"})
        assert answer == {"type": "snapshot_complete", "seq": published[-1]}


@pytest.mark.parametrize("kind", KINDS)
async def test_replay_ahead_of_the_log_is_an_error(tmp_path: Path, aio: Aio, kind: str) -> None:
    """A cursor beyond the newest stored seq cannot come from this daemon: `replay` and
    `subscribe` with `since` answer `replay_ahead` (not a `replay_complete` with a smaller seq
    that the client would take for "nothing missed"), and the connection carries on."""
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        published = await publish_committed(d, "alpha", 5)
        newest = published[-1]
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})
        for since in [newest + 1, newest + 1000, 2**53]:
            answer = await client.request({"type": "replay", "since": since, "requestId": "r"})
            assert answer["type"] == "error", answer
            assert answer["code"] == "replay_ahead"
            assert answer["requestId"] == "r"
            assert "oldestSeq" not in answer
            assert f"seq {since} " in answer["message"] and "snapshot" in answer["message"]
        # subscribe + since: subscribed (the subscription holds), then the error
        await client.send({"type": "subscribe", "dagIds": ["beta"], "since": newest + 7})
        assert await client.recv() == {"type": "subscribed", "dagIds": ["alpha", "beta"]}
        answer = await client.recv()
        assert (answer["type"], answer["code"]) == ("error", "replay_ahead")
        # ... and live events of the new set flow after it
        later = await publish_committed(d, "beta", 2)
        frames = await until_pong(client)
        assert seqs(frames) == later
        # the cursors this daemon did give out are never ahead
        for since in [newest, later[-1]]:
            answer = await client.request({"type": "replay", "since": since})
            assert answer["type"] == "replay_complete", answer
        answer = await client.request({"type": "snapshot"})
        assert answer == {"type": "snapshot_complete", "seq": later[-1]}


async def test_a_cursor_from_another_state_folder_is_ahead(tmp_path: Path, aio: Aio) -> None:
    """The cursor of a client that followed a daemon with a longer history is refused by a
    daemon on a new state folder (or a restored, older state file) at the same address."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    async with harness(old_dir, aio) as h:
        cursor = (await publish_committed(h.daemon, "alpha", 40))[-1]
    async with harness(new_dir, aio) as h:
        await publish_committed(h.daemon, "alpha", 3)
        assert h.daemon.committed_seq < cursor
        for kind in KINDS:
            client = await h.connect(kind)
            await client.send({"type": "subscribe", "dagIds": ["*"], "since": cursor})
            assert (await client.recv())["type"] == "subscribed"
            answer = await client.recv()
            assert (answer["type"], answer["code"]) == ("error", "replay_ahead"), answer


async def test_an_emptied_log_is_not_mistaken_for_another_one(tmp_path: Path, aio: Aio) -> None:
    """Retention may delete every event and the daemon may restart: a client's last seq is
    still this log's (SQLite's AUTOINCREMENT counter keeps the newest seq), so replaying from
    it is complete, neither `replay_ahead` nor `replay_unavailable`."""
    config = make_config(tmp_path)
    async with harness(tmp_path, aio, config=config) as h:
        cursor = (await publish_committed(h.daemon, "alpha", 12))[-1]
        assert await h.daemon.store.prune(keep_count=0, max_age=None) >= 12
    async with harness(tmp_path, aio, config=config) as h:
        assert await h.daemon.oldest_seq() is None
        client = await h.connect("trio")
        await client.send({"type": "subscribe", "dagIds": ["*"], "since": cursor})
        assert (await client.recv())["type"] == "subscribed"
        assert await client.recv() == {"type": "replay_complete", "seq": cursor}
        answer = await client.request({"type": "replay", "since": cursor + 1})
        assert answer["code"] == "replay_ahead"


# ------------------------------------------------------------------ snapshot


@pytest.mark.parametrize("kind", KINDS)
async def test_snapshot_sends_current_state_without_seq(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        ok = (await client.request({"type": "trigger", "dagId": "alpha"}))["runId"]
        failed = (await client.request({"type": "trigger", "dagId": "failing"}))["runId"]
        await h.run_status(ok, "success")
        await h.run_status(failed, "failed")
        slow = (await client.request({"type": "trigger", "dagId": "slow"}))["runId"]
        await h.run_status(slow, "running")
        await h.daemon.store.flush()
        # nothing subscribed: an empty snapshot
        assert await client.request({"type": "snapshot", "requestId": 1}) == {
            "type": "snapshot_complete",
            "seq": h.daemon.store.committed_seq,
            "requestId": 1,
        }
        await client.request({"type": "subscribe", "dagIds": ["alpha", "slow"]})
        await client.send({"type": "snapshot", "requestId": 2})
        frames = await until_pong(client)
        done = frames.pop()
        assert done == {
            "type": "snapshot_complete",
            "seq": h.daemon.store.committed_seq,
            "requestId": 2,
        }
        assert all("seq" not in f for f in frames)
        by_run: dict[str, list[tuple[str, str | None, object]]] = {}
        for f in frames:
            data = f["data"]
            by_run.setdefault(data["runId"], []).append(
                (f["type"], data.get("stepId"), data.get("status", data.get("completedSteps")))
            )
        assert set(by_run) == {ok, slow}  # not the failing DAG's run: not subscribed
        assert by_run[ok] == [
            ("dag_run_status", None, "success"),
            ("step_status", "one", "success"),
            ("step_status", "two", "success"),
            ("dag_run_progress", None, 2),
        ]
        assert by_run[slow] == [
            ("dag_run_status", None, "running"),
            ("step_status", "wait", "running"),
            ("dag_run_progress", None, 0),
        ]
        # live events continue after the snapshot with larger seqs
        assert (await client.request({"type": "cancel", "runId": slow}))["type"] == (
            "cancel_accepted"
        )
        await h.run_status(slow, "cancelled")
        live = seqs(await until_pong(client))
        assert live and min(live) > done["seq"]
        # "*" includes the failed run too
        await client.request({"type": "subscribe", "dagIds": ["*"]})
        await client.send({"type": "snapshot"})
        frames = await until_pong(client)
        runs = {
            f["data"]["runId"]: f["data"]["status"] for f in frames if f["type"] == "dag_run_status"
        }
        assert runs == {ok: "success", failed: "failed", slow: "cancelled"}


# ------------------------------------------------------------- slow consumer


async def test_slow_consumer_is_closed_1013_while_others_get_everything(
    tmp_path: Path, aio: Aio
) -> None:
    async with harness(tmp_path, aio, server="send_buffer = 64\nsend_timeout = 10") as h:
        d = h.daemon
        slow = await h.connect("asyncio", max_queue=1)
        fast = await h.connect("trio")
        for client in (slow, fast):
            await client.request({"type": "subscribe", "dagIds": ["*"]})
        start = d.store.committed_seq
        got: list[int] = []

        async def read_fast() -> None:
            while True:
                frame = await fast.recv(10)
                if "seq" in frame:
                    got.append(frame["seq"])

        published: list[int] = []
        big = "x" * 4000  # fills the socket buffers of the client that does not read
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            extra = 0
            with trio.fail_after(30):
                while extra < 200:
                    published += publish_errors(d, "alpha", 16, big)
                    await d.store.flush()
                    while not got or got[-1] < published[-1]:  # the fast client keeps up
                        await trio.sleep(0.001)
                    if d.hub.dropped_subscribers:
                        extra += 16  # and keeps getting events after the slow one is cut
                    assert len(published) < 20_000, "the slow client was never cut off"
            nursery.cancel_scope.cancel()
        assert d.hub.dropped_subscribers == 1
        assert got == published == stored_seqs(d, since=start)
        # The slow client now reads what reached it: a gapless prefix, then 1013.
        code, reason, frames = await slow.closed(timeout=20)
        assert code == 1013
        assert reason == "slow consumer"
        partial = seqs(frames)
        assert partial == published[: len(partial)]
        assert len(partial) < len(published) - 64
        assert h.server.slow_closed == 1
        # Nothing is lost: reconnect and replay from the last seq received.
        again = await h.connect("asyncio")
        await again.request({"type": "subscribe", "dagIds": ["*"]})
        await again.send({"type": "replay", "since": partial[-1] if partial else start})
        frames = await until_pong(again, timeout=20)
        assert partial + seqs(frames) == published


async def test_slow_consumer_that_keeps_talking_is_still_closed_1013(
    tmp_path: Path, aio: Aio
) -> None:
    """A client that stops reading but keeps sending requests (an app-level keepalive, say):
    the request that finds its queue closed must not cut the 1013 close short."""
    async with harness(tmp_path, aio, server="send_buffer = 64\nsend_timeout = 10") as h:
        d = h.daemon
        slow = await h.connect("asyncio", max_queue=1)
        await slow.request({"type": "subscribe", "dagIds": ["*"]})
        big = "x" * 4000
        with trio.fail_after(30):
            while not d.hub.dropped_subscribers:
                publish_errors(d, "alpha", 16, big)
                await d.store.flush()
                await trio.sleep(0.001)
        for i in range(3):
            await slow.send({"type": "ping", "requestId": i})
        await trio.sleep(0.2)  # let the server read them while the client is not reading
        code, reason, frames = await slow.closed(timeout=20)
        assert (code, reason) == (1013, "slow consumer")
        partial = seqs(frames)
        assert partial == stored_seqs(d)[: len(partial)]


# ---------------------------------------------------------------- heartbeats


async def test_a_peer_that_stops_answering_pings_is_dropped(tmp_path: Path, aio: Aio) -> None:
    """A raw client (wsproto over a trio stream) that authenticates, then never reads again:
    it does not answer the server's WebSocket pings, and is disconnected."""
    async with harness(tmp_path, aio, server='ping_interval = "300ms"') as h:
        parts = urlsplit(h.url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        try:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host=parts.netloc, target=parts.path)))
            with trio.fail_after(5):
                while not any(isinstance(e, AcceptConnection) for e in ws.events()):
                    ws.receive_data(await stream.receive_some())
            auth = json.dumps({"type": "auth", "token": OP_TOKEN})
            await stream.send_all(ws.send(TextMessage(data=auth)))
            # A well-behaved client on the same server stays connected meanwhile.
            healthy = await h.connect("asyncio", ping_interval=None)
            with trio.fail_after(5):
                while h.server.connections != 2:
                    await trio.sleep(0.01)
            start = trio.current_time()
            with trio.fail_after(5):
                while h.server.connections != 1:
                    await trio.sleep(0.01)
            assert 0.5 <= trio.current_time() - start < 3  # interval + the pong's interval
            assert (await healthy.request({"type": "ping"}))["type"] == "pong"
            # what the silent peer was sent: auth_success, then pings; then EOF
            received = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    received += chunk
            ws.receive_data(received)
            kinds = {type(e).__name__ for e in ws.events()}
            assert "Ping" in kinds
        finally:
            await stream.aclose()


class FakeConnection:
    def __init__(self) -> None:
        self.beats: list[tuple[float, dict]] = []

    def queue(self, item: object) -> None:
        self.beats.append((trio.current_time(), json.loads(item.text)))  # type: ignore[attr-defined]


async def test_heartbeats_every_interval_under_a_mock_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(tmp_path, server='heartbeat_interval = "30s"')
    server = Server(SimpleNamespace(), config)  # type: ignore[arg-type]
    a, b = FakeConnection(), FakeConnection()
    server.authenticated.update({a, b})  # type: ignore[arg-type]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.heartbeats)
        await trio.sleep(61)
        server.authenticated.discard(b)  # type: ignore[arg-type]
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert [t - t0 for t, _ in a.beats] == [30, 60, 90, 120]
    assert [t - t0 for t, _ in b.beats] == [30, 60]
    for _, beat in a.beats:
        assert set(beat) == {"type", "timestamp"}
        assert beat["type"] == "heartbeat"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", beat["timestamp"])


@pytest.mark.parametrize("kind", KINDS)
async def test_heartbeats_on_real_sockets(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, server='heartbeat_interval = "200ms"') as h:
        pending = await h.connect(kind, token=None)
        client = await h.connect(kind)  # authenticated, not subscribed to anything
        start = trio.current_time()
        beats = []
        with trio.move_on_after(1.1):
            while True:
                frame = await client.recv()
                assert frame["type"] == "heartbeat"
                beats.append(trio.current_time() - start)
        assert 3 <= len(beats) <= 7, beats
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert all(0.05 < g < 0.6 for g in gaps), gaps
        # nothing at all before authentication
        await pending.send({"type": "auth", "token": OP_TOKEN})
        assert (await pending.recv())["type"] == "auth_success"
        assert (await pending.recv(1.0))["type"] == "heartbeat"


# ------------------------------------------------------------------ shutdown


@pytest.mark.parametrize("kind", KINDS)
async def test_shutdown_sends_the_final_events_then_closes_1001(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    config = make_config(tmp_path)
    result = {}
    # The client outlives the daemon: it lives in `outer`, which is left last.
    async with trio.open_nursery() as outer, running(tmp_path, config=config) as daemon:
        url = url_of(daemon)
        client = await trio_client(outer, url) if kind == "trio" else await aio.connect(url)
        await client.request({"type": "subscribe", "dagIds": ["slow"]})
        run_id = (await client.request({"type": "trigger", "dagId": "slow"}))["runId"]
        with trio.fail_after(10):
            while True:
                frame = await client.recv()
                if frame["type"] == "step_status" and frame["data"]["status"] == "running":
                    break
        last_seen = frame["seq"]

        async def collect() -> None:
            result["closed"] = await client.closed(timeout=15)
            outer.cancel_scope.cancel()

        outer.start_soon(collect)
    # The daemon has stopped: the step was killed, its events committed and delivered.
    code, reason, frames = result["closed"]
    assert code == 1001
    assert "shutting down" in reason
    with sqlite3.connect(config.db_path) as db:
        rows = db.execute(
            "SELECT seq, body FROM events WHERE seq > ? AND dag_id = 'slow' ORDER BY seq",
            (last_seen,),
        ).fetchall()
    db.close()
    assert [json.loads(body) for _, body in rows] == events_of(frames)
    final = [f["data"]["status"] for f in frames if f["type"] == "dag_run_status"]
    assert final[-1] == "cancelled"
    assert all(f["data"]["runId"] == run_id for f in events_of(frames))


async def test_trigger_and_retry_while_stopping_are_refused(tmp_path: Path) -> None:
    """Between "stop accepting runs" and the final 1001 (here: a step that ignores SIGTERM
    holds the shutdown for kill_grace), control requests get `shutting_down`."""
    dags = {**DAGS, "stubborn": "[steps.s]\ncommand = \"trap '' TERM; sleep 30\"\n"}
    config = make_config(tmp_path, dags=dags, top='kill_grace = "1s"')
    result = {}
    async with trio.open_nursery() as outer, running(tmp_path, config=config) as daemon:
        client = await trio_client(outer, url_of(daemon))
        await client.request({"type": "subscribe", "dagIds": ["failing", "stubborn"]})
        failed = (await client.request({"type": "trigger", "dagId": "failing"}))["runId"]
        stubborn = (await client.request({"type": "trigger", "dagId": "stubborn"}))["runId"]
        seen = {failed: "", stubborn: ""}
        with trio.fail_after(10):
            while seen != {failed: "failed", stubborn: "running"}:
                frame = await client.recv()
                if frame["type"] == "dag_run_status":
                    seen[frame["data"]["runId"]] = frame["data"]["status"]

        async def while_stopping() -> None:
            with trio.fail_after(5):
                while daemon._accepting:
                    await trio.sleep(0.005)
            result["trigger"] = await client.request({"type": "trigger", "dagId": "beta"})
            result["retry"] = await client.request({"type": "retry", "runId": failed})
            result["ping"] = await client.request({"type": "ping"})
            result["closed"] = await client.closed(timeout=10)
            outer.cancel_scope.cancel()

        outer.start_soon(while_stopping)
    assert result["trigger"]["code"] == "shutting_down"
    assert result["retry"]["code"] == "shutting_down"
    assert result["ping"]["type"] == "pong"  # queries still work until the end
    code, _reason, frames = result["closed"]
    assert code == 1001
    final = [f["data"]["status"] for f in frames if f["type"] == "dag_run_status"]
    assert final == ["cancelled"]


async def test_dagd_serve_subprocess_end_to_end(tmp_path: Path, aio: Aio) -> None:
    """`python -m dagd serve`: the generated token, the logged URL, events, SIGTERM -> 1001."""
    dags = tmp_path / "dags"
    dags.mkdir()
    for name in ("alpha", "slow"):
        (dags / f"{name}.toml").write_text(DAGS[name])
    cfg = tmp_path / "config.toml"
    cfg.write_text('kill_grace = "300ms"\n[server]\nport = 0\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "support")}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "dagd", "serve", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    log: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            listening = trio.Event()

            async def read_log() -> None:
                buf = b""
                async for chunk in proc.stderr:  # type: ignore[union-attr]
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        log.append(line.decode(errors="replace"))
                        if "listening on ws://" in log[-1]:
                            listening.set()

            nursery.start_soon(read_log)
            with trio.fail_after(15):
                await listening.wait()
            url = re.search(r"listening on (ws://\S+)", "\n".join(log))[1]  # type: ignore[index]
            assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/api/v1/ws", url)
            token_file = tmp_path / "state" / "token"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert str(token_file) in "\n".join(log)  # where to find it, not the token
            token = token_file.read_text().strip()
            assert token not in "\n".join(log)
            client = await aio.connect(url, token=token)
            await client.request({"type": "subscribe", "dagIds": ["*"]})
            ok = (await client.request({"type": "trigger", "dagId": "alpha"}))["runId"]
            slow = (await client.request({"type": "trigger", "dagId": "slow"}))["runId"]
            with trio.fail_after(10):
                running_slow = done = False
                while not (running_slow and done):
                    f = await client.recv()
                    if f["type"] == "dag_run_status":
                        done |= f["data"]["runId"] == ok and f["data"]["status"] == "success"
                    if f["type"] == "step_status" and f["data"]["runId"] == slow:
                        running_slow |= f["data"]["status"] == "running"
            proc.send_signal(signal.SIGTERM)
            code, _reason, frames = await client.closed(timeout=15)
            assert code == 1001
            statuses = [f["data"]["status"] for f in frames if f["type"] == "dag_run_status"]
            assert statuses[-1] == "cancelled"
            with trio.fail_after(10):
                assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()
        if proc.stderr is not None:
            await proc.stderr.aclose()
    text = "\n".join(log)
    assert "Traceback" not in text, text
    assert "dagd stopped" in text, text


@pytest.mark.parametrize("kind", KINDS)
async def test_shutdown_closes_a_connection_waiting_to_authenticate_with_1001(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    result = {}
    async with trio.open_nursery() as outer, running(tmp_path) as daemon:
        url = url_of(daemon)
        if kind == "trio":
            client = await trio_client(outer, url, token=None)
        else:
            client = await aio.connect(url, token=None)
        server = server_of(daemon)
        with trio.fail_after(5):
            while not server.unauthenticated:  # accepted, waiting for its auth message
                await trio.sleep(0.01)

        async def collect() -> None:
            result["closed"] = await client.closed(timeout=15)
            outer.cancel_scope.cancel()

        outer.start_soon(collect)
    code, reason, frames = result["closed"]
    assert (code, frames) == (1001, [])
    assert "shutting down" in reason
