"""The daemon's counters and histograms, for /metrics (dagd/net/http/metrics.py).

Rules this file keeps:
- Counting is a dict increment or a bucket increment: no lock (one trio thread writes and
  reads), no prometheus_client object on the hot path. `committed` runs once per committed
  batch of events (the store's writer calls it), not once per event published.
- Nothing here grows with history: counters are keyed by DAG id and status (bounded by the DAG
  folder and the status enums), and the only per-run entry, a running run's start time, is
  dropped when the run finishes.
- Totals count since this process started (Prometheus counters reset with the process;
  `rate()` and `increase()` handle resets). Nothing is read from the store at start.
- What is counted is what was committed: a run's events during a disk outage are counted once
  they reach the event log, as clients see them.

The values are read in place at scrape time (`DaemonService.stats`); the collector copies
what it exposes, so a scrape never holds anything up.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Protocol

from dagd.core.events import DagEvent, DagRunStatusEvent, StepStatusEvent
from dagd.core.model import FINISHED_RUN, FINISHED_STEP, RunStatus, StepStatus

#: Bucket upper bounds (seconds) of run and step durations. dagd's steps range from a
#: `true` (a few ms) to hours-long jobs; the bounds sit at the marks people read durations
#: by (1 s, 1 min, 5 min, 1 h, 1 day), about x2 to x6 apart, so a quantile estimate is within
#: one such step. 15 buckets keep a DAG's histogram at 17 series per status.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400,
)  # fmt: skip
#: Bucket upper bounds (seconds) of one store transaction. A commit appends to the WAL without
#: fsync (dagd/daemon/store.py): about 0.1-3 ms for a batch of a few hundred events on these
#: machines, so the fine buckets are below 10 ms; the coarse ones catch a slow or failing disk.
COMMIT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
#: Bucket upper bounds (seconds) of event-loop lag (how late a 0.1 s sleep wakes: looplag.py).
#: Under 1 ms is an idle loop; 10-50 ms is busy but fine; over 0.25 s clients notice (a
#: heartbeat or an answer waits that long).
LAG_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Histogram:
    """Observations counted into fixed buckets (upper bounds, inclusive: Prometheus's `le`)
    plus their sum; `observe` is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)  # float to float compares are quicker
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (in the histogram's unit, seconds here)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """How many observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) for each bucket, the last bound being
        `inf`: the shape of Prometheus's `_bucket` series."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class _Committed(Protocol):
    """A committed event as the store hands it over (dagd.daemon.store.StoredEvent)."""

    @property
    def event(self) -> DagEvent: ...


class DaemonStats:
    """What the daemon counts for /metrics. One per daemon (dagd/app.py makes it and hands it
    to the store and the daemon); read in place, written only from the trio thread.

    Keys: `dag` is a DAG id, `status` a RunStatus or StepStatus (a str enum: its text is the
    wire's). Times are seconds; `started` is `monotonic()` when it was made (the daemon's
    uptime starts there).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.started = monotonic()
        #: Runs that began running (a retried run counts again), by DAG.
        self.runs_started: dict[str, int] = {}
        #: Runs that ended, by (DAG, status): success, failed, cancelled.
        self.runs_finished: dict[tuple[str, RunStatus], int] = {}
        #: Steps that reached a final status in a try of their run, by (DAG, status).
        self.steps_finished: dict[tuple[str, StepStatus], int] = {}
        #: From running to finished, by (DAG, status), of the runs this process saw start.
        self.run_seconds: dict[tuple[str, RunStatus], Histogram] = {}
        #: A finished step's last attempt, start to end (its event's times), by (DAG, status).
        self.step_seconds: dict[tuple[str, StepStatus], Histogram] = {}
        #: One store transaction (executing and committing a batch), seconds.
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        #: How late the loop-lag probe woke up (dagd/daemon/looplag.py), seconds.
        self.loop_lag_seconds = Histogram(LAG_BUCKETS)
        self._running_since: dict[str, float] = {}  # run id -> its running event's timestamp

    def uptime(self) -> float:
        """Seconds since this was made."""
        return self.monotonic() - self.started

    def committed(self, events: Iterable[_Committed], seconds: float) -> None:
        """A batch of events was committed, its transaction having taken `seconds`: count the
        run and step events among them. Inlined on purpose: this runs for every committed
        event. Measured (CPU time, step events half of them finished): 0.3 us per event, a
        twentieth of what encoding the event for the wire costs."""
        self.commit_seconds.observe(seconds)
        steps_finished, step_seconds = self.steps_finished, self.step_seconds
        for stored in events:
            event = stored.event
            if type(event) is StepStatusEvent:
                status = event.status
                if status in FINISHED_STEP:
                    key = (event.dag_id, status)
                    steps_finished[key] = steps_finished.get(key, 0) + 1
                    start, end = event.start_time, event.end_time
                    if start is not None and end is not None:
                        hist = step_seconds.get(key)
                        if hist is None:
                            hist = step_seconds[key] = Histogram(DURATION_BUCKETS)
                        hist.observe(end - start if end > start else 0.0)
            elif type(event) is DagRunStatusEvent:
                self._run(event)

    def _run(self, event: DagRunStatusEvent) -> None:
        status = event.status
        if status is RunStatus.RUNNING:
            self.runs_started[event.dag_id] = self.runs_started.get(event.dag_id, 0) + 1
            self._running_since[event.run_id] = event.timestamp
        elif status in FINISHED_RUN:
            key = (event.dag_id, status)
            self.runs_finished[key] = self.runs_finished.get(key, 0) + 1
            since = self._running_since.pop(event.run_id, None)
            if since is not None:  # not for a run cancelled while queued, or closed out at start
                hist = self.run_seconds.get(key)
                if hist is None:
                    hist = self.run_seconds[key] = Histogram(DURATION_BUCKETS)
                hist.observe(max(0.0, event.timestamp - since))


__all__ = [
    "COMMIT_BUCKETS",
    "DURATION_BUCKETS",
    "LAG_BUCKETS",
    "DaemonStats",
    "Histogram",
]
