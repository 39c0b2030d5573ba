"""Cron triggering. It knows nothing of runs or storage: it gets a wall clock, a `fire` function
and a `record` function, so it can be tested alone under trio's MockClock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import trio

from dagd.core.cron import Schedule, due_slots
from dagd.core.model import DagSpec

log = logging.getLogger("dagd.daemon.scheduler")

Fire = Callable[[DagSpec, datetime], None]
Record = Callable[[str, float], None]
#: Whether a DAG's run for a slot exists already (a backfill made it): the slot is not fired.
HasRun = Callable[[str, datetime], bool]


def _no_runs(dag_id: str, slot: datetime) -> bool:
    return False


class CronScheduler:
    """Fires each scheduled DAG at its cron slots.

    `last_slots` (UNIX seconds by DAG id) is where each DAG left off, from the store. A DAG seen for
    the first time starts from now: it does not run for slots before dagd knew it.

    `paused` holds the ids of paused DAGs: they do not fire and their last slot stays where it
    was, so on unpause their `catchup` treats the slots missed meanwhile exactly as slots missed
    while dagd was down (all of them, oldest first, or only the latest).

    `has_run(dag_id, slot)` is asked about each slot before it fires: a slot whose run exists
    already (a backfill made it, ahead of the scheduler) is passed over, not fired again; the
    missed slots without a run still fire. Either way the last slot moves past it.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        fire: Fire,
        record: Record,
        last_slots: Mapping[str, float] | None = None,
        has_run: HasRun = _no_runs,
    ) -> None:
        self.clock = clock
        self.fire = fire
        self.record = record
        self.has_run = has_run
        self.last_slots: dict[str, float] = dict(last_slots or {})
        self.paused: set[str] = set()
        self._dags: dict[str, tuple[DagSpec, Schedule]] = {}
        self._changed = trio.Event()

    def set_dags(self, dags: Mapping[str, DagSpec]) -> None:
        """Replace the set of DAGs (after a reload); the loop recomputes its next wake-up."""
        fresh: dict[str, tuple[DagSpec, Schedule]] = {}
        for dag in dags.values():
            if dag.schedule:
                old = self._dags.get(dag.id)
                if old and old[0].schedule == dag.schedule and old[0].timezone == dag.timezone:
                    fresh[dag.id] = (dag, old[1])
                else:
                    fresh[dag.id] = (dag, Schedule(dag.schedule, dag.timezone))
                    if old:
                        # A changed schedule runs from now: slots of the new expression that
                        # passed before the change were never due, so they must not fire.
                        now = self.clock()
                        if self.last_slots.get(dag.id, now) < now:
                            self.last_slots[dag.id] = now
                            self.record(dag.id, now)
        self._dags = fresh
        self._changed.set()

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG's schedule; the loop recomputes its next wake-up (an unpaused
        DAG's missed slots are due at once)."""
        if paused:
            self.paused.add(dag_id)
        else:
            self.paused.discard(dag_id)
        self._changed.set()

    def next_fire(self, dag_id: str) -> float | None:
        """When the DAG's next slot after now is (UNIX seconds), or None if it has no schedule
        or is paused. Missed slots still to fire (just after an unpause, or after downtime,
        until the loop's next tick) are not counted: they are due at once."""
        entry = self._dags.get(dag_id)
        if entry is None or dag_id in self.paused:
            return None
        last = self.last_slots.get(dag_id, self.clock())
        start = max(last, self.clock())
        return entry[1].next_after(datetime.fromtimestamp(start, UTC)).timestamp()

    def tick(self) -> float:
        """Fire everything due now; return the UNIX time of the next slot (inf if none)."""
        now = self.clock()
        now_dt = datetime.fromtimestamp(now, UTC)
        wake = math.inf
        for dag_id, (dag, schedule) in list(self._dags.items()):
            if dag_id in self.paused:
                continue
            last = self.last_slots.get(dag_id)
            if last is None:
                last = self.last_slots[dag_id] = now
                self.record(dag_id, now)
            slots = due_slots(schedule, datetime.fromtimestamp(last, UTC), now_dt, dag.catchup)
            for slot in slots:
                if self.has_run(dag_id, slot):
                    continue  # a backfill ran it already
                try:
                    self.fire(dag, slot)
                except Exception:
                    log.exception("could not start scheduled run of %s for %s", dag_id, slot)
            if slots:
                self.last_slots[dag_id] = slots[-1].timestamp()
                self.record(dag_id, slots[-1].timestamp())
            nxt = schedule.next_after(datetime.fromtimestamp(max(now, last), UTC)).timestamp()
            wake = min(wake, nxt)
        return wake

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire due slots until cancelled: at each slot, when the DAGs change, and at least
        every 60 seconds. `task_status.started()` at once."""
        task_status.started()
        while True:
            self._changed = trio.Event()
            wake = self.tick()
            delay = wake - self.clock()
            # Wake at the slot, when the DAGs change, and at least every minute (the wall clock
            # can jump, e.g. after a suspend, and trio's sleep follows the monotonic clock).
            with trio.move_on_after(min(max(delay, 0.0), 60.0)):
                await self._changed.wait()
