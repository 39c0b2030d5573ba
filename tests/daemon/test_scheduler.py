"""CronScheduler alone, under trio's MockClock: the wall clock follows trio's virtual clock, so
hours of schedule run in milliseconds and every fire time is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from dagd.core.model import DagSpec, StepSpec
from dagd.daemon.scheduler import CronScheduler
from dagd.runtime.engine import trio_wall_clock


def dag(dag_id: str, schedule: str | None, *, tz: str = "UTC", catchup: bool = False) -> DagSpec:
    return DagSpec(
        id=dag_id,
        steps={"s": StepSpec("s", command="true")},
        order=("s",),
        schedule=schedule,
        timezone=tz,
        catchup=catchup,
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class Harness:
    """A scheduler whose wall clock reads `start` when the test begins, with list-appending
    fire and record functions."""

    def __init__(self, start: datetime, last_slots: dict[str, float] | None = None) -> None:
        self.clock = trio_wall_clock(start.timestamp() - trio.current_time())
        self.fired: list[tuple[str, datetime, float]] = []  # (dag id, slot, wall time of fire)
        self.recorded: list[tuple[str, float]] = []
        self.existing: set[tuple[str, datetime]] = set()  # (dag id, slot) with a run already
        self.asked: list[tuple[str, datetime]] = []
        self.scheduler = CronScheduler(
            self.clock,
            lambda d, slot: self.fired.append((d.id, slot, self.clock())),
            lambda dag_id, slot: self.recorded.append((dag_id, slot)),
            last_slots,
            has_run=self.has_run,
        )

    def has_run(self, dag_id: str, slot: datetime) -> bool:
        self.asked.append((dag_id, slot))
        return (dag_id, slot) in self.existing

    def slots(self, dag_id: str | None = None) -> list[datetime]:
        return [slot for d, slot, _ in self.fired if dag_id is None or d == dag_id]

    def check_on_time(self, late_ok: float = 0.0) -> None:
        """Every slot fired at its own time (not before, and not later than `late_ok`)."""
        for _, slot, at in self.fired:
            assert slot.timestamp() - 1e-3 <= at <= slot.timestamp() + late_ok + 1e-3


async def run_for(h: Harness, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(h.scheduler.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_every_five_minutes_fires_at_each_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness(utc(2024, 1, 1, 12, 0, 0), {"five": utc(2024, 1, 1, 12, 0, 0).timestamp()})
    h.scheduler.set_dags({"five": dag("five", "*/5 * * * *")})
    await run_for(h, 30 * 60 + 1)
    assert h.slots() == [utc(2024, 1, 1, 12, m) for m in (5, 10, 15, 20, 25, 30)]
    assert all(slot.utcoffset() == timedelta(0) for slot in h.slots())
    h.check_on_time()
    assert h.recorded == [("five", s.timestamp()) for s in h.slots()]


async def test_slots_fire_at_their_time_from_a_start_between_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 12, 3, 27)
    h = Harness(start, {"five": start.timestamp() - 1})
    h.scheduler.set_dags({"five": dag("five", "*/5 * * * *")})
    assert h.scheduler.next_fire("five") == utc(2024, 1, 1, 12, 5).timestamp()
    await run_for(h, 10 * 60)
    assert h.slots() == [utc(2024, 1, 1, 12, 5), utc(2024, 1, 1, 12, 10)]
    h.check_on_time()
    assert h.scheduler.next_fire("five") == utc(2024, 1, 1, 12, 15).timestamp()


async def test_time_zone_schedule_across_a_dst_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 09:00 in New York: 14:00 UTC in winter (EST), 13:00 UTC after the switch on 2024-03-10.
    start = utc(2024, 3, 9, 0, 0)
    h = Harness(start, {"ny": start.timestamp()})
    h.scheduler.set_dags({"ny": dag("ny", "0 9 * * *", tz="America/New_York")})
    await run_for(h, 3 * 86400)
    assert h.slots() == [utc(2024, 3, 9, 14), utc(2024, 3, 10, 13), utc(2024, 3, 11, 13)]
    h.check_on_time()


async def test_no_catchup_after_downtime_fires_only_the_latest_missed_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": (start - timedelta(hours=3)).timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *")})
    await run_for(h, 1)
    assert h.slots() == [utc(2024, 1, 1, 10)]  # not 08:00 and 09:00
    assert h.fired[0][2] == start.timestamp()  # at once, on start
    assert h.recorded == [("hourly", utc(2024, 1, 1, 10).timestamp())]
    await run_for(h, 30 * 60)  # then back on schedule
    assert h.slots() == [utc(2024, 1, 1, 10), utc(2024, 1, 1, 11)]


async def test_catchup_fires_every_missed_slot_oldest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": (start - timedelta(hours=3)).timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *", catchup=True)})
    await run_for(h, 1)
    assert h.slots() == [utc(2024, 1, 1, 8), utc(2024, 1, 1, 9), utc(2024, 1, 1, 10)]
    assert h.recorded == [("hourly", utc(2024, 1, 1, 10).timestamp())]


async def test_a_dag_seen_for_the_first_time_does_not_fire_for_past_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 7)
    h = Harness(start)
    h.scheduler.set_dags({"new": dag("new", "0 * * * *", catchup=True)})
    await run_for(h, 52 * 60)
    assert h.slots() == []
    assert h.recorded == [("new", start.timestamp())]  # it starts from now
    await run_for(h, 2 * 60)
    assert h.slots() == [utc(2024, 1, 1, 11)]
    h.check_on_time()


async def test_changed_schedule_takes_effect_without_a_retroactive_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 7)
    h = Harness(start, {"d": start.timestamp()})
    async with trio.open_nursery() as nursery:
        await nursery.start(h.scheduler.run)
        h.scheduler.set_dags({"d": dag("d", "0 * * * *")})
        await trio.sleep(10 * 60)  # 10:17, nothing due yet
        assert h.slots() == []
        h.scheduler.set_dags({"d": dag("d", "*/5 * * * *")})
        await trio.sleep(0)
        assert h.scheduler.next_fire("d") == utc(2024, 1, 1, 10, 20).timestamp()
        await trio.sleep(10 * 60 + 1)  # 10:27
        # The new schedule runs from now: no run for 10:10 or 10:15, which were never due.
        assert h.slots() == [utc(2024, 1, 1, 10, 20), utc(2024, 1, 1, 10, 25)]
        # A DAG that loses its schedule stops firing; other DAGs are untouched.
        h.scheduler.set_dags({"d": dag("d", None), "e": dag("e", "*/10 * * * *")})
        await trio.sleep(20 * 60)  # 10:47
        nursery.cancel_scope.cancel()
    assert h.slots("d") == [utc(2024, 1, 1, 10, 20), utc(2024, 1, 1, 10, 25)]
    assert h.slots("e") == [utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 10, 40)]
    assert h.scheduler.next_fire("d") is None
    h.check_on_time()


async def test_changed_time_zone_takes_effect(autojump_clock: trio.testing.MockClock) -> None:
    start = utc(2024, 1, 1, 0, 0)
    h = Harness(start, {"d": start.timestamp()})
    async with trio.open_nursery() as nursery:
        await nursery.start(h.scheduler.run)
        h.scheduler.set_dags({"d": dag("d", "0 6 * * *")})
        await trio.sleep(3600)
        h.scheduler.set_dags({"d": dag("d", "0 6 * * *", tz="Asia/Tokyo")})  # UTC+9
        await trio.sleep(2 * 86400)
        nursery.cancel_scope.cancel()
    assert h.slots() == [utc(2024, 1, 1, 21), utc(2024, 1, 2, 21)]
    h.check_on_time()


async def test_a_failing_fire_does_not_stop_the_scheduler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 0, 0)
    fired: list[datetime] = []

    def fire(d: DagSpec, slot: datetime) -> None:
        fired.append(slot)
        if len(fired) == 1:
            raise RuntimeError("boom")

    sched = CronScheduler(
        trio_wall_clock(start.timestamp() - trio.current_time()),
        fire,
        lambda *a: None,
        {"d": start.timestamp()},
    )
    sched.set_dags({"d": dag("d", "*/10 * * * *")})
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(20 * 60 + 1)
        nursery.cancel_scope.cancel()
    assert fired == [utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 20)]


async def test_a_paused_dag_does_not_fire_and_others_do(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"a": start.timestamp(), "b": start.timestamp()})
    h.scheduler.set_dags({"a": dag("a", "0 * * * *"), "b": dag("b", "0 * * * *")})
    h.scheduler.set_paused("a", True)
    assert h.scheduler.next_fire("a") is None
    assert h.scheduler.next_fire("b") == utc(2024, 1, 1, 11).timestamp()
    await run_for(h, 3 * 3600)
    assert h.slots("a") == []
    assert h.slots("b") == [utc(2024, 1, 1, h_) for h_ in (11, 12, 13)]
    assert [d for d, _ in h.recorded] == ["b", "b", "b"]  # a's last slot stays where it was


async def unpause_after(h: Harness, dag_id: str, paused_for: float) -> None:
    """Pause `dag_id` now, let the scheduler run `paused_for` seconds, unpause, run 1 s."""
    async with trio.open_nursery() as nursery:
        await nursery.start(h.scheduler.run)
        h.scheduler.set_paused(dag_id, True)
        await trio.sleep(paused_for)
        h.scheduler.set_paused(dag_id, False)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()


async def test_unpause_without_catchup_fires_only_the_latest_missed_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": start.timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *")})
    await unpause_after(h, "hourly", 3 * 3600)  # 11:00, 12:00 and 13:00 missed
    assert h.slots() == [utc(2024, 1, 1, 13)]
    assert h.fired[0][2] == utc(2024, 1, 1, 13, 30).timestamp()  # at once, on unpause
    assert h.scheduler.next_fire("hourly") == utc(2024, 1, 1, 14).timestamp()


async def test_unpause_with_catchup_fires_every_missed_slot_oldest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": start.timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *", catchup=True)})
    await unpause_after(h, "hourly", 3 * 3600)
    assert h.slots() == [utc(2024, 1, 1, 11), utc(2024, 1, 1, 12), utc(2024, 1, 1, 13)]
    assert h.recorded[-1] == ("hourly", utc(2024, 1, 1, 13).timestamp())


async def test_catchup_passes_over_slots_that_have_runs_and_fires_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backfill covered part of a pause (09:00 and 10:00): on unpause, catch-up fires the
    missed slots without a run (07:00 and 08:00, before the backfilled range), not those."""
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": (start - timedelta(hours=4)).timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *", catchup=True)})
    h.existing = {("hourly", utc(2024, 1, 1, 9)), ("hourly", utc(2024, 1, 1, 10))}
    await run_for(h, 1)
    assert h.slots() == [utc(2024, 1, 1, 7), utc(2024, 1, 1, 8)]
    assert h.asked == [("hourly", utc(2024, 1, 1, h_)) for h_ in (7, 8, 9, 10)]
    # the last slot moves past the passed-over ones: they are never asked about again
    assert h.recorded == [("hourly", utc(2024, 1, 1, 10).timestamp())]
    assert h.scheduler.next_fire("hourly") == utc(2024, 1, 1, 11).timestamp()


async def test_without_catchup_a_latest_slot_with_a_run_fires_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = utc(2024, 1, 1, 10, 30)
    h = Harness(start, {"hourly": (start - timedelta(hours=4)).timestamp()})
    h.scheduler.set_dags({"hourly": dag("hourly", "0 * * * *")})
    h.existing = {("hourly", utc(2024, 1, 1, 10))}
    await run_for(h, 1)
    assert h.slots() == []  # only the latest missed slot would run, and it has run
    assert h.recorded == [("hourly", utc(2024, 1, 1, 10).timestamp())]
