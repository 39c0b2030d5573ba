"""Backfill bounds that date arithmetic cannot handle (year 1, year 9999) over real sockets:
the client gets `invalid_range` and the connection stays open, for both clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from wshelp import DAGS, KINDS, Aio, harness

LEAP_DAY = """
schedule = "0 0 29 2 *"
timezone = "Europe/Berlin"
[steps.only]
call = "stepfuncs:noop"
"""


@pytest.mark.parametrize("kind", KINDS)
async def test_hostile_bounds_are_invalid_ranges(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, dags={**DAGS, "leap": LEAP_DAY}) as h:
        client = await h.connect(kind)
        base = {"type": "backfill", "dagId": "leap", "dryRun": True}
        for start, end, says in [
            ("0001-01-01", "0001-01-02", "before 1970"),
            ("0001-01-01T00:00:00Z", "2024-01-01", "before 1970"),
            ("0002-01-01", "2024-01-01", "before 1970"),
            ("1969-12-31", "2024-01-01", "before 1970"),
            ("1970-01-01", "9999-12-31T23:59:59-14:00", "out of range"),
        ]:
            answer = await client.request({**base, "start": start, "end": end, "requestId": 7})
            assert answer["type"] == "error", (start, end, answer)
            assert answer["code"] == "invalid_range" and answer["requestId"] == 7
            assert says in answer["message"], answer
            # the same connection goes on
            assert (await client.request({"type": "ping"}))["type"] == "pong"
        # From 1970 to now, the leap days are a handful of slots (an end after now stops there).
        done = await client.request({**base, "start": "1970-01-01", "end": "9999-12-30"})
        assert done["type"] == "backfill_result", done
        assert 14 <= len(done["slots"]) <= 20
        assert done["slots"][0]["slot"] == "1972-02-28T23:00:00.000Z"
