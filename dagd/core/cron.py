"""Cron schedules: 5-field expressions (plus the usual @aliases) evaluated in a time zone.

Parsing and DST handling come from `cronsim` (the evaluator behind Healthchecks.io): small, pure
Python, no dependencies, and it follows Debian cron's rules for DST gaps and repeats, which is
what users expect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a valid schedule, or None when it is."""
    expanded = ALIASES.get(expr.strip(), expr)
    if len(expanded.split()) != 5:
        return f"cron expression {expr!r} must have 5 fields (minute hour day month weekday)"
    try:
        CronSim(expanded, datetime(2000, 1, 1))
    except CronSimError as exc:
        return f"invalid cron expression {expr!r}: {exc}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why `name` is not a usable IANA time zone, or None when it is."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
    return None


class Schedule:
    """Fire times of one cron expression in one time zone; all datetimes are timezone-aware."""

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        problem = cron_problem(expr) or timezone_problem(tz)
        if problem:
            raise ValueError(problem)
        self.expr = expr
        self._expanded = ALIASES.get(expr.strip(), expr)
        self._tz = ZoneInfo(tz)

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment`."""
        return next(iter(CronSim(self._expanded, moment.astimezone(self._tz))))

    def slots_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Fire times in (start, end], oldest first."""
        slots: list[datetime] = []
        end = end.astimezone(UTC)  # same-tzinfo comparisons ignore fold (DST repeats)
        for slot in CronSim(self._expanded, start.astimezone(self._tz)):
            if slot > end:
                break
            slots.append(slot)
            if len(slots) > 100_000:  # years of every-minute slots: keep the newest
                del slots[:50_000]
        return slots


def due_slots(
    schedule: Schedule, last: datetime, now: datetime, catchup: bool, limit: int = 1000
) -> list[datetime]:
    """The slots to run now, given the last slot already handled.

    Without catchup, only the latest missed slot runs (one run after any downtime); with catchup,
    every missed slot runs, oldest first, at most `limit` of them (the newest ones).
    """
    slots = schedule.slots_between(last, now)
    if not slots:
        return []
    return slots[-limit:] if catchup else slots[-1:]
