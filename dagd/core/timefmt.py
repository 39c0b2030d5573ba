"""Wire timestamps: ISO 8601 in UTC ending in `Z`, with milliseconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

_second_cache: list[object] = [None, ""]  # [whole second, its "YYYY-MM-DDTHH:MM:SS" text]


def iso_z(ts: float) -> str:
    """UNIX seconds -> `2024-01-01T12:00:00.123Z` (milliseconds truncated, as isoformat does).

    Every event carries up to three of these, so the date part is cached per second: events
    come in bursts within the same second, and formatting a datetime costs ~1.5 µs.
    """
    frac, whole = math.modf(ts)  # the same rounding as datetime.fromtimestamp
    us = round(frac * 1_000_000)
    sec = int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    elif us < 0:
        sec, us = sec - 1, us + 1_000_000
    cache = _second_cache
    if cache[0] != sec:
        cache[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cache[0] = sec
    return f"{cache[1]}.{us // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """An ISO 8601 timestamp (with `Z` or an offset) -> UNIX seconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.timestamp()


class RunIdFactory:
    """Airflow-style run ids, `manual__2024-01-01T12:00:00.123456+00:00`, never repeating.

    Two triggers in the same microsecond (or a clock stepping back) get the next free
    microsecond instead of a duplicate id.
    """

    def __init__(self) -> None:
        self._last_us = 0

    def make(self, kind: str, now: float) -> str:
        """`<kind>__<now as ISO 8601 UTC, microseconds>`, `now` in UNIX seconds; later than
        every id this factory made before."""
        us = max(round(now * 1_000_000), self._last_us + 1)
        self._last_us = us
        moment = datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
        return f"{kind}__{moment.isoformat(timespec='microseconds')}"


def scheduled_run_id(slot: datetime) -> str:
    """`scheduled__<slot in UTC>`: one id per cron slot, so a slot never runs twice."""
    return f"scheduled__{slot.astimezone(UTC).isoformat()}"


def slot_run_id(dag_id: str, slot: datetime) -> str:
    """The run id of a DAG's cron slot, `scheduled__<slot in UTC>__<dag_id>`, the same whether
    the scheduler or a backfill queues it. Run ids key runs across every DAG (active runs,
    cancel/retry, the runs table), so it names the DAG: DAGs sharing a schedule fire the same
    slots. Ids of one DAG sort as their slots do."""
    return f"{scheduled_run_id(slot)}__{dag_id}"


def slot_of_run_id(dag_id: str, run_id: str) -> datetime | None:
    """The slot a run id of `dag_id` made by `slot_run_id` names (aware, UTC); None for any
    other id."""
    prefix, suffix = "scheduled__", f"__{dag_id}"
    if not (run_id.startswith(prefix) and run_id.endswith(suffix)):
        return None
    try:
        slot = datetime.fromisoformat(run_id[len(prefix) : -len(suffix)])
    except ValueError:
        return None
    return slot if slot.tzinfo is not None else None
