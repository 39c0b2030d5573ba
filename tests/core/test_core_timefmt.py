"""dagd.core.timefmt: wire timestamps and run ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dagd.core.timefmt import RunIdFactory, iso_z, parse_iso, scheduled_run_id

NOON = datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (NOON, "2024-01-01T12:00:00.000Z"),
        (NOON + 0.123, "2024-01-01T12:00:00.123Z"),
        (NOON + 0.1239, "2024-01-01T12:00:00.123Z"),  # milliseconds, truncated
        (NOON + 59.999, "2024-01-01T12:00:59.999Z"),
        (1_672_531_500, "2023-01-01T00:05:00.000Z"),
    ],
)
def test_iso_z(ts, text):
    assert iso_z(ts) == text


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2024-01-01T12:00:00.000Z", NOON),
        ("2024-01-01T12:00:00Z", NOON),
        ("2024-01-01T12:00:00.123Z", NOON + 0.123),
        ("2024-01-01T13:00:00+01:00", NOON),
        ("2024-01-01T07:30:00.5-04:30", NOON + 0.5),
    ],
)
def test_parse_iso(text, ts):
    assert parse_iso(text) == ts


def test_parse_iso_rejects_naive_and_garbage():
    with pytest.raises(ValueError, match="has no time zone"):
        parse_iso("2024-01-01T12:00:00")
    with pytest.raises(ValueError):
        parse_iso("noon")


def test_iso_round_trip_is_exact_for_milliseconds():
    for ms in (0, 1, 123, 999):
        for base in (0.0, NOON, 4_102_444_800.0):  # 1970, 2024, 2100
            ts = base + ms / 1000
            assert parse_iso(iso_z(ts)) == ts


def test_run_id_format():
    assert RunIdFactory().make("manual", NOON + 0.123456) == (
        "manual__2024-01-01T12:00:00.123456+00:00"
    )
    assert RunIdFactory().make("scheduled", NOON) == "scheduled__2024-01-01T12:00:00.000000+00:00"


def test_run_ids_never_repeat_for_the_same_now():
    factory = RunIdFactory()
    ids = [factory.make("manual", NOON + 0.123456) for _ in range(3)]
    assert ids == [
        "manual__2024-01-01T12:00:00.123456+00:00",
        "manual__2024-01-01T12:00:00.123457+00:00",
        "manual__2024-01-01T12:00:00.123458+00:00",
    ]


def test_run_ids_keep_increasing_when_the_clock_steps_back():
    factory = RunIdFactory()
    first = factory.make("manual", NOON + 10)
    second = factory.make("manual", NOON)  # the clock went back 10 s
    assert first == "manual__2024-01-01T12:00:10.000000+00:00"
    assert second == "manual__2024-01-01T12:00:10.000001+00:00"


def test_many_run_ids_are_unique_and_sorted():
    factory = RunIdFactory()
    ids = [factory.make("manual", NOON + (i // 7) * 1e-6) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)


def test_run_id_carries_across_a_second_boundary():
    factory = RunIdFactory()
    factory.make("manual", NOON + 0.999999)
    assert factory.make("manual", NOON + 0.999999) == "manual__2024-01-01T12:00:01.000000+00:00"


@pytest.mark.parametrize(
    "slot",
    [
        datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime(2024, 1, 1, 13, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2024, 1, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_scheduled_run_id_is_the_slot_in_utc(slot):
    assert scheduled_run_id(slot) == "scheduled__2024-01-01T12:00:00+00:00"


def test_a_slots_run_id_gives_its_slot_back_and_other_ids_give_none() -> None:
    from datetime import UTC, datetime

    from dagd.core.timefmt import slot_of_run_id, slot_run_id

    slot = datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    run_id = slot_run_id("etl__x", slot)
    assert run_id == "scheduled__2024-03-31T01:30:00+00:00__etl__x"
    assert slot_of_run_id("etl__x", run_id) == slot
    assert slot_of_run_id("x", run_id) is None  # another DAG's id ending alike: not a slot
    assert slot_of_run_id("etl", "manual__2024-03-31T01:30:00.000000+00:00") is None
    assert slot_of_run_id("etl", "scheduled__not-a-time__etl") is None
