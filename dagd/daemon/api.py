"""The daemon as the network layer sees it: a narrow interface, and the values it hands out.

`dagd.net` imports this module and nothing else of the daemon layer (tests/test_layers.py holds
it to that), so the daemon's insides can change without touching the network code. `Daemon`
satisfies `DaemonService`; the composition root (dagd/app.py) hands it to the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from dagd.core.events import DagEvent
from dagd.core.logslice import MAX_LOG_READ, LogSlice
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    BackfillResult,
    BrokenFile,
    DagDetail,
    DagSummary,
    RunDetail,
)
from dagd.core.records import RunRecord
from dagd.daemon.errors import DaemonError
from dagd.daemon.health import DaemonHealth
from dagd.daemon.hub import Subscriber
from dagd.daemon.stats import DaemonStats, Histogram
from dagd.daemon.store import StoredEvent


class DaemonService(Protocol):
    """What the WebSocket server needs of the daemon: requests, queries, live events and the
    event log. Errors a client caused are DaemonError(code, message); the codes are in
    docs/protocol.md."""

    async def trigger(self, dag_id: str, params: Mapping[str, Any] | None = None) -> str:
        """Queue a run of `dag_id`; returns its run id. DaemonError codes: unknown_dag,
        invalid_params, shutting_down, duplicate_run, storage_unavailable."""
        ...

    async def cancel(self, run_id: str, reason: str = ...) -> None:
        """Cancel a queued or running run. DaemonError codes: unknown_run, not_running."""
        ...

    async def retry(self, run_id: str) -> str:
        """Run a failed or cancelled run's unfinished steps again; returns its run id.
        DaemonError codes: unknown_run, unknown_dag, not_finished, not_retryable,
        shutting_down, storage_unavailable."""
        ...

    def list_dags(self) -> list[DagSummary]:
        """Every loaded DAG, by id."""
        ...

    def broken_files(self) -> list[BrokenFile]:
        """Every DAG file that is broken or refused now, by path, with its problems."""
        ...

    def list_pools(self) -> list[PoolUsage]:
        """Every configured pool, by name: slots, slots in use, waiting attempts."""
        ...

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest `limit` runs (of `dag_id`, or of every DAG), newest first. DaemonError
        code: unknown_dag (a `dag_id` neither loaded nor with any run)."""
        ...

    async def run_detail(self, run_id: str) -> RunDetail:
        """One run with every step of its definition and their attempts. DaemonError code:
        unknown_run."""
        ...

    async def read_log(
        self,
        run_id: str,
        step_id: str,
        attempt: int | None = None,
        stream: str = "out",
        offset: int = 0,
        length: int = MAX_LOG_READ,
    ) -> LogSlice:
        """Up to `length` bytes (1..MAX_LOG_READ) of attempt `attempt` (None: the latest) of a
        step's log `stream` ("out": stdout, "err": stderr) from byte `offset`: the bytes, the
        file's size, and whether the attempt is over (`LogSlice.at_end`: nothing more will
        come). DaemonError codes: invalid_message, unknown_run (also once history retention
        deleted the run and its logs), unknown_step, unknown_attempt, log_unreadable (the
        file exists but cannot be read; the message names it)."""
        ...

    def dag_detail(self, dag_id: str) -> DagDetail:
        """One loaded DAG with its steps' definitions and edges. DaemonError code:
        unknown_dag."""
        ...

    async def pause(self, dag_id: str) -> None:
        """Stop a DAG's schedule from firing; returns once that is committed. DaemonError
        codes: unknown_dag, storage_unavailable."""
        ...

    async def unpause(self, dag_id: str) -> float | None:
        """Let a DAG's schedule fire again, once committed; returns its next slot (UNIX
        seconds, None without schedule). DaemonError codes: unknown_dag,
        storage_unavailable."""
        ...

    async def backfill(
        self,
        dag_id: str,
        start: str,
        end: str,
        params: Mapping[str, Any] | None = None,
        *,
        rerun: bool = False,
        dry_run: bool = False,
    ) -> BackfillResult:
        """Queue a run for every schedule slot of the range. DaemonError codes: unknown_dag,
        no_schedule, invalid_range, invalid_params, shutting_down, storage_unavailable."""
        ...

    def snapshot(self, dag_ids: set[str] | None = None) -> tuple[list[DagEvent], int]:
        """Events describing every known run's present state (of `dag_ids`; None: all), and
        the committed seq they are current at."""
        ...

    def subscribe(self, dag_ids: Iterable[str] | None = None, buffer: int = 0) -> Subscriber:
        """A bounded queue of committed events (StoredEvent) for `dag_ids` (None: all);
        `buffer` items at most (0: config.server.send_buffer)."""
        ...

    @property
    def committed_seq(self) -> int:
        """The seq of the newest committed event (0: none yet)."""
        ...

    @property
    def runs_version(self) -> tuple[int, int]:
        """Changes whenever the stored runs (what `list_runs` reads) may have changed; read it
        before `list_runs` to key a copy of the answer."""
        ...

    async def events_page(
        self, since: int, until: int | None = None, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        """(seq, dag_id, wire text) of committed events with since < seq <= until (None: the
        committed seq), oldest first, at most `limit`."""
        ...

    async def oldest_seq(self) -> int | None:
        """The lowest seq still in the event log (retention deletes older ones), None if
        the log is empty."""
        ...

    def health(self) -> DaemonHealth:
        """The daemon at a glance, and whether it is healthy (dagd/daemon/health.py); from
        memory, cheap whatever the history."""
        ...

    @property
    def stats(self) -> DaemonStats:
        """The daemon's counters and histograms since it started (dagd/daemon/stats.py):
        live values, read them, never change them."""
        ...


__all__ = [
    "BackfillResult",
    "BrokenFile",
    "DaemonError",
    "DaemonHealth",
    "DaemonService",
    "DaemonStats",
    "DagDetail",
    "DagSummary",
    "Histogram",
    "LogSlice",
    "RunDetail",
    "RunRecord",
    "StoredEvent",
    "Subscriber",
]
