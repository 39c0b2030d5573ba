"""Event-loop lag: how late a short sleep wakes up, the measure of a busy or blocked loop.

Everything in dagd shares one trio loop, so a long synchronous stretch (a big commit, parsing
a huge DAG on the loop, a slow callback) delays every client's answer and every step's start.
A probe task sleeps `interval` seconds and records how much later than asked it woke, into
`DaemonStats.loop_lag_seconds` (/metrics: `dagd_event_loop_lag_seconds`). It costs one
wake-up per interval (0.1 s: ten a second, a few microseconds each).
"""

from __future__ import annotations

import trio

from dagd.daemon.stats import DaemonStats

#: Seconds between probes.
INTERVAL = 0.1


async def probe_loop_lag(
    stats: DaemonStats,
    interval: float = INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: sleep `interval` seconds, observe how late the wake-up was (seconds,
    on trio's clock, so a MockClock drives it in tests)."""
    task_status.started()
    while True:
        asked = trio.current_time() + interval
        await trio.sleep_until(asked)
        stats.loop_lag_seconds.observe(max(0.0, trio.current_time() - asked))


__all__ = ["INTERVAL", "probe_loop_lag"]
