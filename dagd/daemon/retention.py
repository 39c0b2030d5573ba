"""What the daemon keeps of its history: the event log's bounds (`event_retention_count`,
`event_retention_age`) and, under `[history]` (`keep_days`, `keep_runs`), finished runs with
their steps, attempts, events and step log files (docs/config.md).

Rules this file keeps:
- Only finished runs go; a queued or running run, or one whose items still wait for the store's
  writer, is never touched (`Store.delete_runs` checks again inside its transaction).
- History goes in batches, each one transaction in a worker thread under the store's write
  lock, sized to hold that lock about `BATCH_TARGET` seconds: the writer commits events
  between two batches and the event loop never waits for the database.
- A run's step logs go after its rows, and the store notes them in the same transaction as
  still to remove (`Store.log_removals`): a crash in between leaves no orphan log folder, the
  next round removes it.
- Replay stays honest: history retention deletes events from the middle of the log, so the
  store raises its replay floor to the highest seq it deleted, and a replay from below it is
  answered `replay_unavailable` (`Store.oldest_seq`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio

from dagd.core.config import Config
from dagd.daemon.store import Store
from dagd.runtime.logfiles import remove_run_logs

log = logging.getLogger("dagd.daemon.retention")

#: Seconds between two rounds of pruning.
PRUNE_INTERVAL = 300.0
#: Runs in the first batch of a round; later batches are sized from how long the last one took.
FIRST_BATCH = 200
MIN_BATCH = 10
MAX_BATCH = 1000
#: Seconds a batch should hold the store's write lock (the writer's events wait meanwhile).
BATCH_TARGET = 0.05

DAY = 86400.0


@attrs.frozen
class Pruned:
    """What one round of retention deleted: `events` by the event log's own bounds; `runs`
    finished runs by `[history]`, with their `steps` rows, `attempts` rows and `run_events`;
    `log_folders` run log folders removed (some perhaps left by an earlier round), in
    `batches` transactions."""

    events: int = 0
    runs: int = 0
    steps: int = 0
    attempts: int = 0
    run_events: int = 0
    log_folders: int = 0
    batches: int = 0


async def prune_once(
    store: Store,
    config: Config,
    now: float,
    *,
    on_pruned: Callable[[list[str]], None] | None = None,
) -> Pruned:
    """One round of retention as of `now` (UNIX seconds): the event log's bounds, then
    `config.history`. `on_pruned` is called with the ids of the runs each batch deleted (the
    daemon forgets them). What fails (a full disk, a log file that cannot be removed) is logged
    and tried again next round; nothing is raised but cancellation."""
    events = await store.prune(config.event_retention_count, config.event_retention_age, now)
    if events:
        log.info("event log retention: deleted %d old events", events)
    try:
        history = await _prune_history(store, config, now, on_pruned)
    except sqlite3.Error as exc:
        log.warning(
            "history retention: cannot delete from %s (%s); trying again in %gs",
            store.path,
            exc,
            PRUNE_INTERVAL,
        )
        return Pruned(events=events)
    return attrs.evolve(history, events=events)


async def _prune_history(
    store: Store, config: Config, now: float, on_pruned: Callable[[list[str]], None] | None
) -> Pruned:
    log_dir = config.log_dir
    # Logs a crash or a failed removal left behind in an earlier round first.
    folders = await _remove_logs(store, log_dir, await store.log_removals())
    keep_days, keep_runs = config.history.keep_days, config.history.keep_runs
    ended_before = None if keep_days is None else now - keep_days * DAY
    doomed = await store.finished_runs_to_prune(ended_before, keep_runs)
    if not doomed:
        return Pruned(log_folders=folders)
    runs = steps = attempts = run_events = batches = 0
    by_dag: Counter[str] = Counter()
    size = FIRST_BATCH
    while doomed:
        batch, doomed = doomed[:size], doomed[size:]
        started = time.perf_counter()
        deleted = await store.delete_runs(batch)
        took = time.perf_counter() - started
        batches += 1
        runs += len(deleted.runs)
        steps += deleted.steps
        attempts += deleted.attempts
        run_events += deleted.events
        by_dag.update(dag_id for dag_id, _ in deleted.runs)
        if on_pruned is not None and deleted.runs:
            on_pruned([run_id for _, run_id in deleted.runs])
        folders += await _remove_logs(store, log_dir, deleted.runs)
        # Aim the next batch at BATCH_TARGET seconds, at most doubling or halving at a time.
        scale = min(2.0, max(0.5, BATCH_TARGET / max(took, 1e-6)))
        size = max(MIN_BATCH, min(MAX_BATCH, int(size * scale)))
    if runs:
        dags = ", ".join(f"{dag_id} {count}" for dag_id, count in sorted(by_dag.items()))
        floor = f"; replay from before seq {store.replay_floor} is no longer possible"
        log.info(
            "history retention: deleted %d finished runs (%s) with %d steps, %d attempts,"
            " %d events and %d log folders, in %d batches%s",
            runs,
            dags,
            steps,
            attempts,
            run_events,
            folders,
            batches,
            floor if run_events else "",
        )
    return Pruned(0, runs, steps, attempts, run_events, folders, batches)


async def _remove_logs(store: Store, log_dir: Path, runs: Sequence[tuple[str, str]]) -> int:
    """Remove the log folders of deleted runs, (dag_id, run_id), in a worker thread; the ones
    removed (or never made) are taken off the store's list, the others stay on it for the next
    round. Returns how many folders were removed."""
    if not runs:
        return 0

    def work() -> tuple[list[tuple[str, str]], int, list[str]]:
        done: list[tuple[str, str]] = []
        removed = 0
        problems: list[str] = []
        for dag_id, run_id in runs:
            try:
                removed += remove_run_logs(log_dir, dag_id, run_id)
            except ValueError:
                pass  # an id no log folder can have: the run never had one
            except OSError as exc:
                problems.append(f"{exc.filename or log_dir}: {exc.strerror}")
                continue
            done.append((dag_id, run_id))
        return done, removed, problems

    done, removed, problems = await trio.to_thread.run_sync(work)
    if problems:
        log.warning(
            "history retention: cannot remove the logs of %d deleted runs (%s); trying again"
            " in %gs",
            len(problems),
            problems[0],
            PRUNE_INTERVAL,
        )
    await store.logs_removed(done)
    return removed
