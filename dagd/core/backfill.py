"""Backfill ranges: the text of a `backfill` request's `start` and `end` -> schedule slots.

A bound is ISO 8601 text: a date (`2024-01-01`) or a date and time (`2024-01-01T06:00`,
`2024-01-01 06:00:00+02:00`). Without an offset it is read in the DAG's time zone, which is
where its cron expression is read too, so `--start 2024-01-01` of a DAG scheduled at
`0 2 * * *` in Europe/Berlin begins with the 02:00 Berlin slot of that day. A date as `end`
counts its whole day: `--end 2024-01-31` includes the slots of January 31st.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagd.core.cron import Schedule

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


class RangeError(ValueError):
    """A backfill range that cannot be used: unreadable bounds, `end` before `start`, or more
    slots than allowed. Its text is one line, fit to show to whoever asked."""


def parse_bound(text: str, timezone: str, *, end: bool) -> datetime:
    """The moment `text` names, timezone-aware: a date is its midnight in `timezone` (as `end`:
    the next day's midnight minus one microsecond, so the whole day counts); a date and time
    without offset is read in `timezone`. Raises RangeError for any other text."""
    stripped = text.strip()
    what = "end" if end else "start"
    try:
        if _DATE_ONLY.fullmatch(stripped):
            day = date.fromisoformat(stripped)
            moment = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))
            if end:
                moment += timedelta(days=1, microseconds=-1)
            return moment
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(
            f"{what} {text[:60]!r} is not an ISO 8601 date (2024-01-31) or date and time"
            " (2024-01-31T06:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def backfill_slots(
    schedule: Schedule, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """The schedule's slots from `start` to `end`, both included, oldest first (in the
    schedule's time zone). Raises RangeError when `end` is before `start` or there are more
    than `limit` slots (it stops looking at `limit` + 1, so a huge range costs no more)."""
    if end < start:
        raise RangeError(f"end {end.isoformat()} is before start {start.isoformat()}")
    slots: list[datetime] = []
    # next_after is strict: start one microsecond early so a slot at `start` itself counts.
    slot = schedule.next_after(start - timedelta(microseconds=1))
    while slot <= end:
        if len(slots) == limit:
            raise RangeError(
                f"the range holds more than {limit} schedule slots; split it into smaller ranges"
            )
        slots.append(slot)
        slot = schedule.next_after(slot)
    return slots


__all__ = ["RangeError", "backfill_slots", "parse_bound"]
