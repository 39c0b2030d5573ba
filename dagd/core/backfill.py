"""Backfill ranges: the text of a `backfill` request's `start` and `end` -> schedule slots.

A bound is ISO 8601 text: a date (`2024-01-01`) or a date and time (`2024-01-01T06:00`,
`2024-01-01 06:00:00+02:00`). Without an offset it is read in the DAG's time zone, which is
where its cron expression is read too, so `--start 2024-01-01` of a DAG scheduled at
`0 2 * * *` in Europe/Berlin begins with the 02:00 Berlin slot of that day. A date as `end`
counts its whole day: `--end 2024-01-31` includes the slots of January 31st.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagd.core.cron import Schedule

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


#: No bound may lie before this year: cron slots before the UNIX epoch are nobody's backfill,
#: and dates near year 1 (or 9999) make date arithmetic overflow.
MIN_YEAR = 1970


class RangeError(ValueError):
    """A backfill range that cannot be used: unreadable bounds, bounds before 1970 or beyond
    what dates can hold, `end` before `start`, or more slots than allowed. Its text is one
    line, fit to show to whoever asked."""


def parse_bound(text: str, timezone: str, *, end: bool) -> datetime:
    """The moment `text` names, timezone-aware: a date is its midnight in `timezone` (as `end`:
    the next day's midnight minus one microsecond, so the whole day counts); a date and time
    without offset is read in `timezone`. Raises RangeError for any other text, for a moment
    whose year (where it is written) is before MIN_YEAR, and for one too close to year 9999
    to compute with."""
    what = "end" if end else "start"
    out_of_range = RangeError(
        f"{what} {text[:60]!r} is out of range: use a date between {MIN_YEAR} and 9998"
    )
    try:
        moment = _parse_bound(text, timezone, end=end)
    except ArithmeticError:  # OverflowError: "date value out of range", near year 1 or 9999
        raise out_of_range from None
    if moment.year < MIN_YEAR:
        raise RangeError(
            f"{what} {text[:60]!r} is before {MIN_YEAR}: there are no schedule slots to"
            " backfill that early"
        )
    try:
        moment.astimezone(UTC)  # as every later comparison across time zones does
    except ArithmeticError:
        raise out_of_range from None
    return moment


def _parse_bound(text: str, timezone: str, *, end: bool) -> datetime:
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
    schedule's time zone). Raises RangeError when `end` is before `start`, there are more
    than `limit` slots (it stops looking at `limit` + 1, so a huge range costs no more), or
    the dates overflow (bounds near year 1 or 9999: parse_bound refuses those already).

    It takes up to about 0.1 s for `limit` = 1000 (one cron search per slot; a sparse
    expression such as `0 0 13 * 5` is the slowest): callers on an event loop run it in a
    worker thread."""
    if end < start:
        raise RangeError(f"end {end.isoformat()} is before start {start.isoformat()}")
    try:
        return _slots(schedule, start, end, limit)
    except ArithmeticError:
        raise RangeError(
            f"the range {start.isoformat()} to {end.isoformat()} is out of range: use dates"
            f" between {MIN_YEAR} and 9998"
        ) from None


def _slots(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
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


__all__ = ["MIN_YEAR", "RangeError", "backfill_slots", "parse_bound"]
