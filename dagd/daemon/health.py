"""The daemon's state at a glance, and what "healthy" means.

dagd is healthy when it can do its job: take runs and record them. That is two conditions:
- the state file can be written (while writes fail, dagd holds events in memory and refuses
  triggers and retries with `storage_unavailable`: docs/config.md, "When the disk fails");
- the daemon accepts runs (it has started and is not shutting down).

Not part of it, on purpose: broken DAG files (dagd runs their last good version, and a restart
would not mend them: they are counted, for an alert of their own), failed runs (the DAGs'
business, not the daemon's), and event-loop lag (a loop too slow to answer is seen by the
health check's own timeout). A supervisor acting on /healthz therefore restarts dagd only for
what a restart can change.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class DaemonHealth:
    """A snapshot of the daemon (`Daemon.health()`), cheap to take: nothing is read from
    the store and nothing in it grows with history.

    `runs_queued` and `runs_running` are by DAG id (every loaded DAG, 0 if it has none);
    `store_error` is one line naming the state file and SQLite's error while writes fail,
    else None; `uptime` is seconds since the daemon was made.
    """

    dags: int
    broken_dag_files: int
    store_error: str | None
    accepting: bool
    committed_seq: int
    runs_queued: Mapping[str, int]
    runs_running: Mapping[str, int]
    uptime: float

    @property
    def problems(self) -> list[str]:
        """Why the daemon is not healthy, one sentence each; empty when it is."""
        found = []
        if self.store_error is not None:
            found.append(f"{self.store_error}; new runs are refused until writes succeed")
        if not self.accepting:
            found.append("the daemon is not accepting runs (starting or shutting down)")
        return found

    @property
    def healthy(self) -> bool:
        """No problems (module docstring)."""
        return not self.problems


__all__ = ["DaemonHealth"]
