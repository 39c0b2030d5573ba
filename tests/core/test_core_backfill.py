"""dagd.core.backfill: a backfill range's text -> the schedule's slots, in the DAG's time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from dagd.core.backfill import RangeError, backfill_slots, parse_bound
from dagd.core.cron import Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_date_is_midnight_in_the_zone_and_as_end_its_whole_day() -> None:
    assert parse_bound("2024-01-01", "Europe/Berlin", end=False) == datetime(
        2024, 1, 1, tzinfo=BERLIN
    )
    end = parse_bound(" 2024-01-31 ", "Europe/Berlin", end=True)
    assert end == datetime(2024, 1, 31, 23, 59, 59, 999_999, tzinfo=BERLIN)


def test_a_date_and_time_takes_its_offset_else_the_zone() -> None:
    assert parse_bound("2024-01-01T06:00", "Europe/Berlin", end=True) == datetime(
        2024, 1, 1, 6, tzinfo=BERLIN
    )
    assert parse_bound("2024-01-01 06:00:00Z", "Europe/Berlin", end=False) == datetime(
        2024, 1, 1, 6, tzinfo=UTC
    )
    assert (
        parse_bound("2024-01-01T06:00+02:00", "UTC", end=False).utcoffset().total_seconds() == 7200
    )  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "2024-01-01T25:00", "1/2/2024"])
def test_other_text_is_a_range_error_naming_it(text: str) -> None:
    with pytest.raises(RangeError, match=r"start .* is not an ISO 8601 date"):
        parse_bound(text, "UTC", end=False)


def test_slots_include_both_ends_oldest_first() -> None:
    schedule = Schedule("0 * * * *")
    start = datetime(2024, 1, 1, 1, tzinfo=UTC)
    end = datetime(2024, 1, 1, 3, tzinfo=UTC)
    assert backfill_slots(schedule, start, end, 10) == [
        datetime(2024, 1, 1, h, tzinfo=UTC) for h in (1, 2, 3)
    ]
    assert backfill_slots(schedule, end, end, 10) == [end]


def test_slots_across_a_dst_change_follow_the_zone() -> None:
    # 02:30 does not exist in Berlin on 2024-03-31: cron runs it at 03:00 (Debian's rule).
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    start = parse_bound("2024-03-30", "Europe/Berlin", end=False)
    end = parse_bound("2024-04-01", "Europe/Berlin", end=True)
    slots = [s.astimezone(UTC) for s in backfill_slots(schedule, start, end, 10)]
    assert slots == [
        datetime(2024, 3, 30, 1, 30, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),
        datetime(2024, 4, 1, 0, 30, tzinfo=UTC),
    ]


def test_end_before_start_and_too_many_slots_are_range_errors() -> None:
    schedule = Schedule("* * * * *")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(RangeError, match="is before start"):
        backfill_slots(schedule, start, datetime(2023, 12, 31, tzinfo=UTC), 10)
    with pytest.raises(RangeError, match="more than 1000 schedule slots"):
        backfill_slots(schedule, start, datetime(2030, 1, 1, tzinfo=UTC), 1000)
    assert len(backfill_slots(schedule, start, datetime(2024, 1, 1, 0, 9, tzinfo=UTC), 10)) == 10


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ("0001-01-01", False),
        ("0001-01-01", True),
        ("0001-01-01T00:00", False),
        ("0004-02-29T00:00:00+14:00", False),
        ("1969-12-31", True),
        ("1969-12-31T23:59:59Z", False),
    ],
)
def test_bounds_before_1970_are_range_errors(text: str, end: bool) -> None:
    with pytest.raises(RangeError, match=re.escape(f"{text!r} is before 1970")):
        parse_bound(text, "Europe/Berlin", end=end)


def test_the_epoch_itself_is_a_bound() -> None:
    assert parse_bound("1970-01-01", "Europe/Berlin", end=False).year == 1970


@pytest.mark.parametrize(
    ("text", "end"),
    [("9999-12-31", True), ("9999-12-31T23:00:00-14:00", False)],
)
def test_bounds_that_overflow_are_range_errors(text: str, end: bool) -> None:
    """Moments that exist where they are written but not in UTC (year 10000 there)."""
    with pytest.raises(RangeError, match="is out of range"):
        parse_bound(text, "Etc/GMT+12", end=end)


def test_slots_that_overflow_are_range_errors() -> None:
    """backfill_slots on its own, given moments parse_bound would refuse: a RangeError, not
    the OverflowError of `start - 1 microsecond` at year 1."""
    schedule = Schedule("0 0 29 2 *")
    with pytest.raises(RangeError, match="out of range"):
        backfill_slots(schedule, datetime(1, 1, 1, tzinfo=UTC), datetime(2, 1, 1, tzinfo=UTC), 10)
