"""Reading a step attempt's log for clients: which attempt, whether it is over, which bytes.

Rules this file keeps:
- A path is built only from ids the daemon knows: the run must be in memory or in the store,
  the step in its state, definition or rows, and the DAG id comes from the run, never from
  the asker. The ids are checked once more as plain path components (`run_logs`) before use.
- Whether the attempt is over is decided before the file is read: output is written before
  the attempt's end is known (both executors close their files before reporting the result:
  dagd/runtime/local/shellthread.py, dagd/runtime/dask/executor.py), so a slice marked
  `final` holds everything up to `size`, and `size` is where the log ends for good.
- Reads are bounded (`MAX_LOG_READ`) and happen in worker threads, at most `READ_THREADS` at
  once, so a slow disk or many followers never hold up the event loop or take every thread
  the store's reads need.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dagd.core.logslice import LOG_STREAMS, MAX_LOG_READ, LogSlice, LogStream
from dagd.core.model import DagSpec
from dagd.core.runstate import ATTEMPT_OUT, RunState
from dagd.core.spec import ID_RE
from dagd.daemon.errors import DaemonError
from dagd.daemon.store import Store
from dagd.runtime.logfiles import attempt_log, read_range, run_logs

#: Log reads in worker threads at once, over every client (trio's default limiter has 40
#: threads, which the store's reads share).
READ_THREADS = 4


class LogReader:
    """Reads step logs under `log_dir` for the runs `find_live` (runs in memory) and `store`
    know; `definition(run_id)` gives a stored run's DAG definition (to tell a step that never
    ran from one that does not exist)."""

    def __init__(
        self,
        log_dir: Path,
        store: Store,
        find_live: Callable[[str], RunState | None],
        definition: Callable[[str], Awaitable[tuple[str, DagSpec] | None]],
    ) -> None:
        self.log_dir = log_dir
        self.store = store
        self.find_live = find_live
        self.definition = definition
        self.limiter = trio.CapacityLimiter(READ_THREADS)

    async def read(
        self,
        run_id: str,
        step_id: str,
        attempt: int | None = None,
        stream: str = "out",
        offset: int = 0,
        length: int = MAX_LOG_READ,
    ) -> LogSlice:
        """Up to `length` bytes (at most MAX_LOG_READ) of `stream` ("out": stdout, "err":
        stderr) of attempt `attempt` (1-based, over every try of the run; None: the latest) of
        `step_id` in `run_id`, from byte `offset`. See `LogSlice` for what comes back: an
        offset at or past the end gives no bytes.

        DaemonError codes: `invalid_message` (a stream other than out/err, a negative offset,
        a length outside 1..MAX_LOG_READ), `unknown_run` (no such run in memory or in the
        store: also once history retention deleted it with its logs), `unknown_step` (not a
        step of the run), `unknown_attempt` (no such attempt: the step has not started that
        many, or none yet), `log_unreadable` (the file exists but cannot be read: EACCES,
        EIO; the message names it)."""
        if stream not in LOG_STREAMS:
            raise DaemonError("invalid_message", f"stream must be 'out' or 'err', not {stream!r}")
        if offset < 0:
            raise DaemonError("invalid_message", f"offset must be >= 0, not {offset}")
        if not 1 <= length <= MAX_LOG_READ:
            raise DaemonError("invalid_message", f"length must be 1..{MAX_LOG_READ}")
        dag_id, latest, running = await self._attempts(run_id, step_id)
        if attempt is None:
            if latest == 0:
                raise DaemonError(
                    "unknown_attempt", f"step {step_id!r} of run {run_id!r} has not run yet"
                )
            attempt = latest
        elif not 1 <= attempt <= latest:
            made = f"attempts: 1-{latest}" if latest else "it has not run yet"
            raise DaemonError(
                "unknown_attempt",
                f"no attempt {attempt} of step {step_id!r} in run {run_id!r} ({made})",
            )
        final = not (running and attempt == latest)
        checked: LogStream = "out" if stream == "out" else "err"
        path = self._path(dag_id, run_id, step_id, attempt, checked)
        try:
            async with self.limiter:
                read = await trio.to_thread.run_sync(read_range, path, offset, length)
        except OSError as exc:  # EACCES, EIO: the daemon's own file, so say which
            raise DaemonError(
                "log_unreadable", f"cannot read {path}: {exc.strerror or exc}"
            ) from None
        data, size = read if read is not None else (b"", 0)
        return LogSlice(run_id, step_id, attempt, checked, offset, data, size, final)

    async def _attempts(self, run_id: str, step_id: str) -> tuple[str, int, bool]:
        """(DAG id, latest attempt number (0: none yet), is that attempt still out) of a step.
        Raises DaemonError unknown_run / unknown_step."""
        state = self.find_live(run_id)
        if state is not None:
            st = state.steps.get(step_id)
            if st is None:
                raise _unknown_step(run_id, step_id)
            return state.dag.id, st.attempts_before + st.attempt, st.phase in ATTEMPT_OUT
        rows = await self.store.read(
            "SELECT r.dag_id, s.attempt, s.retry_count FROM runs r"
            " LEFT JOIN steps s ON s.run_id = r.run_id AND s.step_id = ?"
            " WHERE r.run_id = ?",
            (step_id, run_id),
        )
        if not rows:
            raise DaemonError("unknown_run", f"no run {run_id!r}")
        dag_id, attempt, retry_count = rows[0]
        if attempt is None:  # no row: the step never started, or the run has no such step
            bound = await self.definition(run_id)
            if bound is None or step_id not in bound[1].steps:
                raise _unknown_step(run_id, step_id)
            return str(dag_id), 0, False
        # A run not in memory is not running (a running or queued run always is); a row from
        # before attempts were numbered in the store has attempt 0: its retries tell.
        return str(dag_id), int(attempt) or int(retry_count) + 1, False

    def _path(
        self, dag_id: str, run_id: str, step_id: str, attempt: int, stream: LogStream
    ) -> Path:
        try:
            run_logs(self.log_dir, dag_id, run_id)  # raises ValueError for a bad component
        except ValueError:
            plain = False
        else:
            plain = ID_RE.match(step_id) is not None
        if not plain:
            # Ids the daemon itself holds never fail these checks; refuse rather than build
            # a path from something else.
            raise DaemonError("unknown_step", f"no log of step {step_id!r} in run {run_id!r}")
        return attempt_log(self.log_dir, dag_id, run_id, step_id, attempt, stream)


def _unknown_step(run_id: str, step_id: str) -> DaemonError:
    return DaemonError("unknown_step", f"run {run_id!r} has no step {step_id!r}")
