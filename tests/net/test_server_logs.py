"""Following a step's log over the WebSocket (`follow_log`): live output, offsets, resuming
after a reconnect, the end marker, unfollowing, limits, errors, and a client that does not read.
A real daemon with real shell steps that wait on a file the test controls; both client
libraries (trio-websocket and the independent asyncio `websockets`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from wshelp import (
    KINDS,
    Aio,
    Client,
    TrioWS,
    harness,
    make_config,
    publish_committed,
    tws,
)

from dagd.core.config import HistoryConfig
from dagd.core.protocol.requests import MAX_LOG_FOLLOWS
from dagd.daemon.daemon import Daemon
from dagd.daemon.retention import prune_once

GATED = """
max_active_runs = 10
[steps.talk]
command = '''
echo "first $DAGD_ATTEMPT"
echo "warn é" >&2
while [ ! -e {gate} ]; do sleep 0.01; done
printf 'second\\n'
cat {more} 2>/dev/null || true
'''
[steps.after]
command = "true"
depends_on = ["talk"]
"""


def gated(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """Harness options for DAG 'logs' whose step 'talk' waits for tmp_path/gate."""
    gate, more = tmp_path / "gate", tmp_path / "more"
    return {"dags": {"logs": GATED.format(gate=gate, more=more)}, **kw}


async def started(daemon: Daemon, run_id: str, size: int = 1, stream: str = "out") -> None:
    """Wait until the run's step 'talk' wrote at least `size` bytes to `stream`."""
    with trio.fail_after(10):
        while True:
            try:
                if (await daemon.read_log(run_id, "talk", stream=stream)).size >= size:
                    return
            except Exception:  # not started yet
                pass
            await trio.sleep(0.01)


async def follow(client: Client, run_id: str, **kw: Any) -> dict[str, Any]:
    answer = await client.request({"type": "follow_log", "runId": run_id, "stepId": "talk", **kw})
    return answer


async def read_follow(client: Client, *, timeout: float = 10) -> tuple[list[dict], dict]:
    """Frames of a follow until its log_end: (chunks, log_end)."""
    chunks = []
    with trio.fail_after(timeout):
        while True:
            frame = await client.recv(timeout)
            if frame["type"] == "log_chunk":
                chunks.append(frame)
            elif frame["type"] == "log_end":
                return chunks, frame


def contiguous(chunks: list[dict], start: int) -> str:
    """The text of chunks that each start where the one before ended (asserted)."""
    at = start
    for chunk in chunks:
        assert chunk["offset"] == at, chunks
        at = chunk["nextOffset"]
    return "".join(c["text"] for c in chunks)


@pytest.mark.parametrize("kind", KINDS)
async def test_follow_a_running_step_live_to_its_end(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        client = await h.connect(kind, token="read-secret-token")  # reading needs no operate
        run_id = await h.daemon.trigger("logs")
        await started(h.daemon, run_id)
        assert await follow(client, run_id) == {
            "type": "log_following",
            "runId": run_id,
            "stepId": "talk",
            "attempt": 1,
            "stream": "out",
            "offset": 0,
        }
        first = await client.recv()
        assert first == {
            "type": "log_chunk",
            "runId": run_id,
            "stepId": "talk",
            "attempt": 1,
            "stream": "out",
            "offset": 0,
            "nextOffset": 8,
            "text": "first 1\n",
        }
        answer = await follow(client, run_id, stream="err", attempt=1)
        assert (answer["type"], answer["stream"]) == ("log_following", "err")
        # "é" is two bytes: offsets count bytes, the text is decoded.
        err = await client.recv()
        assert (err["stream"], err["text"], err["nextOffset"]) == ("err", "warn é\n", 8)
        (tmp_path / "gate").touch()
        ends = {}
        chunks: list[dict] = []
        with trio.fail_after(10):
            while len(ends) < 2:
                frame = await client.recv()
                if frame["type"] == "log_end":
                    ends[frame["stream"]] = frame
                else:
                    chunks.append(frame)
        assert contiguous([c for c in chunks if c["stream"] == "out"], 8) == "second\n"
        assert [c for c in chunks if c["stream"] == "err"] == []
        assert ends["out"] == {
            "type": "log_end",
            "runId": run_id,
            "stepId": "talk",
            "attempt": 1,
            "stream": "out",
            "offset": 15,
            "reason": "complete",
            "message": None,
        }
        assert (ends["err"]["offset"], ends["err"]["reason"]) == (8, "complete")
        # log_end came after the step was over: the run's step is final in the store.
        await h.run_status(run_id, "success")


async def test_follow_a_finished_attempt_from_a_middle_offset(tmp_path: Path, aio: Aio) -> None:
    (tmp_path / "gate").touch()
    (tmp_path / "more").write_bytes(b"x" * 100_000 + b"\xff tail\n")
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        run_id = await h.daemon.trigger("logs")
        await h.run_status(run_id, "success")
        client = await h.connect("asyncio")
        assert (await follow(client, run_id, offset=3))["offset"] == 3
        chunks, end = await read_follow(client)
        text = contiguous(chunks, 3)
        assert text == "st 1\nsecond\n" + "x" * 100_000 + "\ufffd tail\n"
        assert len(chunks) == 2  # at most 64 KiB of the file per chunk
        assert (end["reason"], end["offset"]) == ("complete", 8 + 7 + 100_000 + 7)
        # A step that wrote nothing: an empty log, over at once.
        answer = await client.request(
            {"type": "follow_log", "runId": run_id, "stepId": "after", "stream": "err"}
        )
        assert answer["attempt"] == 1
        assert (await client.recv())["type"] == "log_end"


async def test_a_follow_delivers_with_the_smallest_send_buffer(tmp_path: Path, aio: Aio) -> None:
    """send_buffer = 1 (the least the configuration allows): a follow still sends its log,
    one chunk at a time, and its end."""
    (tmp_path / "gate").touch()
    (tmp_path / "more").write_bytes(b"y" * 150_000)
    config = make_config(tmp_path, server="send_buffer = 1", **gated(tmp_path))
    async with harness(tmp_path, aio, config=config) as h:
        run_id = await h.daemon.trigger("logs")
        await h.run_status(run_id, "success")
        client = await h.connect("asyncio")
        await follow(client, run_id)
        chunks, end = await read_follow(client, timeout=5)
        assert contiguous(chunks, 0) == "first 1\nsecond\n" + "y" * 150_000
        assert end["reason"] == "complete"


@pytest.mark.parametrize("kind", KINDS)
async def test_resume_after_a_reconnect_with_no_gap_and_no_repeat(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        run_id = await h.daemon.trigger("logs")
        await started(h.daemon, run_id)
        client = await h.connect(kind)
        await follow(client, run_id)
        cursor = (await client.recv())["nextOffset"]
        await client.close()
        # Output written while no one follows.
        (tmp_path / "more").write_text("".join(f"line {i}\n" for i in range(2000)))
        (tmp_path / "gate").touch()
        await h.run_status(run_id, "success")
        again = await h.connect(kind)
        assert (await follow(again, run_id, attempt=1, offset=cursor))["offset"] == cursor
        chunks, end = await read_follow(again)
        whole = (h.daemon.config.log_dir / "logs" / run_id / "talk.1.out").read_text()
        assert "first 1\n" + contiguous(chunks, cursor) == whole
        assert end["offset"] == len(whole.encode())


async def test_unfollow_stops_the_chunks_and_follows_are_limited(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        runs = [await h.daemon.trigger("logs") for _ in range(MAX_LOG_FOLLOWS // 2 + 1)]
        for run_id in runs:
            await started(h.daemon, run_id)
            await started(h.daemon, run_id, stream="err")
        client = await h.connect("trio")
        for run_id in runs[:-1]:
            for stream in ("out", "err"):
                assert (await follow(client, run_id, stream=stream))["type"] == "log_following"
                assert (await client.recv())["type"] == "log_chunk"
            if run_id == runs[0]:  # following a followed log again is refused
                again = await follow(client, run_id)
                assert (again["code"], "already following" in again["message"]) == (
                    "invalid_message",
                    True,
                )
        refused = await follow(client, runs[-1])
        assert (refused["type"], refused["code"]) == ("error", "too_many_follows")
        # Unfollowing frees a place.
        unfollow = {"type": "unfollow_log", "runId": runs[0], "stepId": "talk", "attempt": 1}
        assert await client.request({**unfollow, "requestId": 5}) == {
            "type": "log_unfollowed",
            "runId": runs[0],
            "stepId": "talk",
            "attempt": 1,
            "stream": "out",
            "requestId": 5,
        }
        # Unfollowing what is not followed is answered the same way.
        assert (await client.request(unfollow))["type"] == "log_unfollowed"
        assert (await follow(client, runs[-1]))["type"] == "log_following"
        assert (await client.recv())["runId"] == runs[-1]
        (tmp_path / "gate").touch()
        ends = []
        with trio.fail_after(10):
            while len(ends) < MAX_LOG_FOLLOWS:
                frame = await client.recv()
                assert (frame["runId"], frame["stream"]) != (runs[0], "out"), frame
                if frame["type"] == "log_end":
                    ends.append(frame)
        # Ended follows no longer count.
        assert (await follow(client, runs[0]))["type"] == "log_following"


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_hostile_and_malformed_follows_are_refused(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    (tmp_path / "gate").touch()
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        run_id = await h.daemon.trigger("logs")
        await h.run_status(run_id, "success")
        client = await h.connect(kind)
        cases = [
            ({"runId": "nope", "stepId": "talk"}, "unknown_run"),
            ({"runId": "../../../etc", "stepId": "passwd"}, "unknown_run"),
            ({"runId": run_id, "stepId": "../../../../etc/passwd"}, "unknown_step"),
            ({"runId": run_id, "stepId": "talk/../after"}, "unknown_step"),
            ({"runId": run_id, "stepId": "nope"}, "unknown_step"),
            ({"runId": run_id, "stepId": "talk", "attempt": 2}, "unknown_attempt"),
            ({"runId": run_id, "stepId": "talk", "attempt": 0}, "invalid_message"),
            ({"runId": run_id, "stepId": "talk", "offset": -1}, "invalid_message"),
            ({"runId": run_id, "stepId": "talk", "stream": "../out"}, "invalid_message"),
            ({"runId": run_id, "stepId": "talk", "offset": "0"}, "invalid_message"),
            ({"runId": run_id}, "invalid_message"),
            ({"runId": run_id, "stepId": "talk", "data": 1}, "invalid_message"),
        ]
        for fields, code in cases:
            answer = await client.request({"type": "follow_log", "requestId": "x", **fields})
            assert (answer["type"], answer["code"], answer["requestId"]) == (
                "error",
                code,
                "x",
            ), fields
        # The connection is still fine.
        assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_a_client_that_does_not_read_is_paced_not_closed(tmp_path: Path, aio: Aio) -> None:
    """A follow of a 3 MiB log by a client that stops reading: the daemon sends only what the
    socket takes, holds no more than a chunk, never closes the client as slow; events still
    reach it; once it reads again it gets every byte, in order, and every event."""
    size = 3 * 1024 * 1024
    (tmp_path / "gate").touch()
    (tmp_path / "more").write_bytes(b"a" * size)
    config = make_config(tmp_path, server="send_buffer = 64\nsend_timeout = 30", **gated(tmp_path))
    async with harness(tmp_path, aio, config=config) as h:
        run_id = await h.daemon.trigger("logs")
        await h.run_status(run_id, "success")
        # trio-websocket's reader stops reading the socket while one message waits unread.
        async with tws(h.url, message_queue_size=1) as ws:
            client = TrioWS(ws)
            await client.send({"type": "subscribe", "dagIds": ["noise"]})
            assert (await client.recv())["type"] == "subscribed"
            await follow(client, run_id)
            (conn,) = h.server.authenticated
            key = (run_id, "talk", 1, "out")
            with trio.fail_after(10):
                while True:  # until the socket is full: the follow stops moving
                    before = conn.follows[key].offset
                    await trio.sleep(0.15)
                    if conn.follows[key].offset == before:
                        break
            sent = conn.follows[key].offset
            assert sent < 2 * 1024 * 1024, sent  # paced by the socket: about 256 KiB here
            seqs = await publish_committed(h.daemon, "noise", 40)  # events while stalled
            await trio.sleep(0.2)
            assert conn.sub.queued() <= 40 + 1  # the events, and at most one log item
            assert h.server.slow_closed == 0
            # Reading again: every byte in order, every event.
            chunks, events = [], []
            with trio.fail_after(30):
                while True:
                    frame = await client.recv()
                    if frame["type"] == "log_chunk":
                        chunks.append(frame)
                    elif frame["type"] == "log_end":
                        break
                    elif "seq" in frame:
                        events.append(frame["seq"])
                while len(events) < len(seqs):
                    events.append((await client.recv())["seq"])
            text = contiguous(chunks, 0)
            assert text == "first 1\nsecond\n" + "a" * size
            assert events == seqs
            assert h.server.slow_closed == 0


async def test_a_run_deleted_by_retention_while_followed(tmp_path: Path, aio: Aio) -> None:
    """History retention deletes a finished run whose log a stalled client follows: once the
    client reads again it gets the bytes sent before, then log_end "deleted"."""
    (tmp_path / "gate").touch()
    (tmp_path / "more").write_bytes(b"b" * 3 * 1024 * 1024)
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        old = await h.daemon.trigger("logs")
        await h.run_status(old, "success")
        async with tws(h.url, message_queue_size=1) as ws:
            client = TrioWS(ws)
            await follow(client, old)
            (conn,) = h.server.authenticated
            await trio.sleep(0.2)  # the socket fills; the follow waits
            assert (old, "talk", 1, "out") in conn.follows
            new = await h.daemon.trigger("logs")
            await h.run_status(new, "success")
            await h.daemon.store.flush()
            history = attrs.evolve(h.daemon.config, history=HistoryConfig(keep_runs=1))
            pruned = await prune_once(
                h.daemon.store, history, time.time(), on_pruned=h.daemon._forget
            )
            assert (pruned.runs, pruned.log_folders) == (1, 1)
            assert not (h.daemon.config.log_dir / "logs" / old).exists()
            chunks, end = await read_follow(client)
            assert contiguous(chunks, 0).startswith("first 1\nsecond\nbbb")
            assert end["reason"] == "deleted" and end["offset"] == chunks[-1]["nextOffset"]
            assert end["offset"] < 3 * 1024 * 1024
            assert "deleted" in end["message"]
            # And a new follow of it: the run is unknown now.
            assert (await follow(client, old))["code"] == "unknown_run"


async def test_follow_the_tail_of_a_long_log(tmp_path: Path, aio: Aio) -> None:
    (tmp_path / "gate").touch()
    (tmp_path / "more").write_text("x" * 200_000 + "€uro\n")  # "€" is three bytes
    async with harness(tmp_path, aio, **gated(tmp_path)) as h:
        run_id = await h.daemon.trigger("logs")
        await h.run_status(run_id, "success")
        size = 8 + 7 + 200_000 + 7
        client = await h.connect("asyncio")
        # 6 bytes before the end cuts "€" after its first byte: the follow starts after it.
        answer = await follow(client, run_id, tail=6)
        assert answer["offset"] == size - 4
        chunks, end = await read_follow(client)
        assert (contiguous(chunks, size - 4), end["offset"]) == ("uro\n", size)
        assert (await follow(client, run_id, tail=7))["offset"] == size - 7  # a whole "€"
        chunks, _ = await read_follow(client)
        assert contiguous(chunks, size - 7) == "€uro\n"
        assert (await follow(client, run_id, tail=10**9))["offset"] == 0  # all of it
        chunks, _ = await read_follow(client)
        assert contiguous(chunks, 0).endswith("€uro\n")
        for bad in ({"tail": -1}, {"tail": 5, "offset": 3}, {"tail": "5"}):
            assert (await follow(client, run_id, **bad))["code"] == "invalid_message"
