"""dagd.core.cron: 5-field schedules and @aliases, evaluated in a time zone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dagd.core.cron import Schedule, cron_problem, due_slots, timezone_problem

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "moment", "expected"),
    [
        ("*/5 * * * *", utc(2024, 1, 1, 12, 0, 30), utc(2024, 1, 1, 12, 5)),
        ("*/5 * * * *", utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 10)),  # strictly after
        ("0 9 * * 1", utc(2024, 1, 1, 9), utc(2024, 1, 8, 9)),  # Monday to next Monday
        ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("30 23 31 12 *", utc(2024, 6, 1), utc(2024, 12, 31, 23, 30)),
    ],
)
def test_next_after(expr, moment, expected):
    assert Schedule(expr).next_after(moment) == expected


@pytest.mark.parametrize(
    ("alias", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_aliases_fire_like_their_expansion(alias, expanded):
    assert cron_problem(alias) is None
    start, end = utc(2023, 12, 30, 7, 13), utc(2025, 1, 2)
    by_alias = Schedule(alias).slots_between(start, end)
    assert by_alias == Schedule(expanded).slots_between(start, end)
    assert by_alias


def test_daily_alias_values():
    slots = Schedule("@daily").slots_between(utc(2024, 1, 1), utc(2024, 1, 4))
    assert slots == [utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 4)]


def test_slots_between_is_start_exclusive_end_inclusive():
    hourly = Schedule("@hourly")
    assert hourly.slots_between(utc(2024, 1, 1, 0), utc(2024, 1, 1, 3)) == [
        utc(2024, 1, 1, 1),
        utc(2024, 1, 1, 2),
        utc(2024, 1, 1, 3),
    ]
    assert hourly.slots_between(utc(2024, 1, 1, 0), utc(2024, 1, 1, 0, 59)) == []
    assert hourly.slots_between(utc(2024, 1, 1, 3), utc(2024, 1, 1, 1)) == []


def test_slots_are_aware_datetimes_in_the_schedule_zone():
    slots = Schedule("0 6 * * *", "Europe/Berlin").slots_between(utc(2024, 1, 1), utc(2024, 1, 3))
    assert [s.tzinfo for s in slots] == [BERLIN, BERLIN]
    assert [s.astimezone(UTC) for s in slots] == [utc(2024, 1, 1, 5), utc(2024, 1, 2, 5)]


def test_daily_in_berlin_across_spring_forward():
    """Local midnight every day; the UTC day containing the change is 23 hours long."""
    slots = Schedule("@daily", "Europe/Berlin").slots_between(utc(2024, 3, 29), utc(2024, 4, 2))
    assert [(s.day, s.hour, s.minute) for s in slots] == [
        (30, 0, 0),
        (31, 0, 0),
        (1, 0, 0),
        (2, 0, 0),  # 2024-04-02T00:00+02:00 is 2024-04-01T22:00Z, before the end
    ]
    in_utc = [s.astimezone(UTC) for s in slots]
    assert in_utc == [
        utc(2024, 3, 29, 23),
        utc(2024, 3, 30, 23),
        utc(2024, 3, 31, 22),
        utc(2024, 4, 1, 22),
    ]
    gaps = [b - a for a, b in itertools.pairwise(in_utc)]
    assert gaps == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]


def test_a_slot_in_the_skipped_hour_runs_right_after_the_jump():
    """2:30 does not exist in Berlin on 2024-03-31: it runs at 3:00 CEST, once."""
    slots = Schedule("30 2 * * *", "Europe/Berlin").slots_between(
        utc(2024, 3, 29, 12), utc(2024, 4, 2)
    )
    assert [s.astimezone(UTC) for s in slots] == [
        utc(2024, 3, 30, 1, 30),  # 02:30 CET
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST, right after the gap
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
    ]


def test_a_daily_slot_in_the_repeated_hour_runs_once():
    """2:30 happens twice in Berlin on 2024-10-27; a daily job runs on the first one only."""
    slots = Schedule("30 2 * * *", "Europe/Berlin").slots_between(
        utc(2024, 10, 25, 12), utc(2024, 10, 29)
    )
    assert [s.astimezone(UTC) for s in slots] == [
        utc(2024, 10, 26, 0, 30),
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST, not again at 02:30 CET
        utc(2024, 10, 28, 1, 30),
    ]


def test_hourly_in_berlin_across_fall_back_is_strictly_increasing():
    slots = Schedule("@hourly", "Europe/Berlin").slots_between(
        utc(2024, 10, 26, 23), utc(2024, 10, 27, 3)
    )
    assert [s.astimezone(UTC) for s in slots] == [
        utc(2024, 10, 27, 0),  # 02:00 CEST
        utc(2024, 10, 27, 1),  # 02:00 CET
        utc(2024, 10, 27, 2),
        utc(2024, 10, 27, 3),
    ]


def test_next_after_inside_the_repeated_hour():
    hourly = Schedule("@hourly", "Europe/Berlin")
    # 02:30 CEST -> the next top of the hour is 02:00 CET (an hour later in UTC terms: 01:00Z).
    assert hourly.next_after(utc(2024, 10, 27, 0, 30)).astimezone(UTC) == utc(2024, 10, 27, 1)
    # 02:00 CET itself -> 03:00 CET.
    assert hourly.next_after(utc(2024, 10, 27, 1)).astimezone(UTC) == utc(2024, 10, 27, 2)


def test_slots_between_with_an_end_in_the_repeated_hour_in_the_same_zone():
    """`end` given as Berlin 02:30 CEST (00:30Z): the 02:00 CET slot (01:00Z) is after it."""
    hourly = Schedule("@hourly", "Europe/Berlin")
    end = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)  # fold=0: the first, CEST
    assert end.astimezone(UTC) == utc(2024, 10, 27, 0, 30)
    slots = hourly.slots_between(utc(2024, 10, 26, 23), end)
    assert [s.astimezone(UTC) for s in slots] == [utc(2024, 10, 27, 0)]


def test_start_and_end_in_other_zones_mean_the_same_instants():
    daily = Schedule("@daily", "Europe/Berlin")
    new_york = ZoneInfo("America/New_York")
    a = daily.slots_between(utc(2024, 1, 1), utc(2024, 1, 5))
    b = daily.slots_between(
        utc(2024, 1, 1).astimezone(new_york), utc(2024, 1, 5).astimezone(new_york)
    )
    assert a == b


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("* 24 * * *", "invalid cron expression"),
        ("* * 0 * *", "invalid cron expression"),
        ("* * * 13 *", "invalid cron expression"),
        ("* * * *", "must have 5 fields"),
        ("* * * * * *", "must have 5 fields"),
        ("", "must have 5 fields"),
        ("@reboot", "must have 5 fields"),
        ("@every 5m", "must have 5 fields"),
    ],
)
def test_cron_problem(expr, fragment):
    problem = cron_problem(expr)
    assert problem is not None and fragment in problem
    with pytest.raises(ValueError, match="cron expression"):
        Schedule(expr)


@pytest.mark.parametrize("expr", ["* * * * *", "0 0 * * 1-5", "*/15 9-17 * * mon-fri", "@daily"])
def test_valid_cron(expr):
    assert cron_problem(expr) is None


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc", "utc", "Europe/Berln"])
def test_timezone_problem(name):
    assert "unknown time zone" in timezone_problem(name)
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule("@daily", name)


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_valid_timezone(name):
    assert timezone_problem(name) is None


def test_due_slots_without_catchup_runs_only_the_latest_missed_slot():
    hourly = Schedule("@hourly")
    assert due_slots(hourly, utc(2024, 1, 1, 0), utc(2024, 1, 1, 5, 30), catchup=False) == [
        utc(2024, 1, 1, 5)
    ]
    assert due_slots(hourly, utc(2024, 1, 1, 5), utc(2024, 1, 1, 5, 30), catchup=False) == []


def test_due_slots_with_catchup_runs_every_missed_slot_up_to_the_limit():
    hourly = Schedule("@hourly")
    last, now = utc(2024, 1, 1, 0), utc(2024, 1, 1, 5, 30)
    assert due_slots(hourly, last, now, catchup=True) == [utc(2024, 1, 1, h) for h in range(1, 6)]
    assert due_slots(hourly, last, now, catchup=True, limit=2) == [
        utc(2024, 1, 1, 4),
        utc(2024, 1, 1, 5),
    ]
