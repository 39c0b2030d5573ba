"""A replay that history retention overtakes: events deleted while the replay pages through
the log must end it with `replay_unavailable`, never with a `replay_complete` over a gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from wshelp import KINDS, Aio, Harness, harness

import dagd.net.connection as connection_module


async def finished_runs(h: Harness, count: int) -> list[str]:
    """`count` runs of alpha, one after the other, each finished and committed."""
    run_ids = []
    for _ in range(count):
        run_id = await h.daemon.trigger("alpha")
        await h.run_status(run_id, "success")
        run_ids.append(run_id)
    await h.daemon.store.flush()
    return run_ids


async def until_answer(client: Any) -> tuple[list[int], dict[str, Any]]:
    """The seqs of the events received before the first answer (a frame without data), and
    that answer."""
    seqs = []
    with trio.fail_after(10):
        while True:
            frame = await client.recv()
            if "data" not in frame:
                return seqs, frame
            seqs.append(frame["seq"])


@pytest.mark.parametrize("kind", KINDS)
async def test_runs_deleted_during_a_replay_end_it_unavailable(
    tmp_path: Path, aio: Aio, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "REPLAY_PAGE", 3)
    async with harness(tmp_path, aio) as h:
        d = h.daemon
        first, _, last = await finished_runs(h, 3)
        rows = d.store._read("SELECT seq, run_id FROM events ORDER BY seq")
        last_seqs = [seq for seq, run_id in rows if run_id == last]
        client = await h.connect(kind)
        await client.request({"type": "subscribe", "dagIds": ["alpha"]})

        # Without deletions, pages of 3 add up to the whole log.
        await client.send({"type": "replay", "since": 0, "requestId": "whole"})
        seqs, answer = await until_answer(client)
        assert seqs == [seq for seq, _ in rows]
        assert answer == {"type": "replay_complete", "seq": d.committed_seq, "requestId": "whole"}

        # History retention deletes the newest run between the first page and the second: its
        # events lie after the replay's cursor.
        pages = 0
        read_page = d.events_page

        async def page_then_prune(since: int, until: int | None = None, limit: int = 1000) -> Any:
            nonlocal pages
            pages += 1
            if pages == 2:
                deleted = await d.store.delete_runs([last])
                assert [run_id for _, run_id in deleted.runs] == [last]
            return await read_page(since, until, limit)

        monkeypatch.setattr(d, "events_page", page_then_prune)
        await client.send({"type": "replay", "since": 0, "requestId": "raced"})
        seqs, answer = await until_answer(client)
        assert answer["type"] == "error", answer
        assert answer["code"] == "replay_unavailable" and answer["requestId"] == "raced"
        assert answer["oldestSeq"] == max(last_seqs) + 1
        assert "snapshot" in answer["message"]
        assert seqs == [seq for seq, _ in rows][:3]  # the one page sent before the deletion
        assert not set(seqs) & set(last_seqs)

        # A replay from the new floor on is whole again.
        monkeypatch.setattr(d, "events_page", read_page)
        floor = d.store.replay_floor
        assert floor == max(last_seqs)
        await client.send({"type": "replay", "since": floor, "requestId": "after"})
        seqs, answer = await until_answer(client)
        assert seqs == [seq for seq, run_id in rows if seq > floor and run_id != last]
        assert answer == {"type": "replay_complete", "seq": d.committed_seq, "requestId": "after"}
        assert first not in {
            run_id
            for _, run_id in d.store._read("SELECT seq, run_id FROM events WHERE seq > ?", (floor,))
        }
