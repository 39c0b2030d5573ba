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
- A log folder is never removed from under a run that exists: under the store's write lock,
  and only while no run of that id exists, a deleted run's folder is moved into its DAG's
  `.removing` folder (a rename), and removed from there afterwards, outside the lock
  (`Store.take_log_removals`). What a crash left there goes in the next round.
- Replay stays honest: history retention deletes events from the middle of the log, so the
  store raises its replay floor to the highest seq it deleted, and a replay from below it is
  answered `replay_unavailable` (`Store.oldest_seq`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from dagd.core.config import Config
from dagd.daemon.store import Store
from dagd.runtime.logfiles import run_logs

log = logging.getLogger("dagd.daemon.retention")

#: Seconds between two rounds of pruning.
PRUNE_INTERVAL = 300.0
#: Runs in the first batch of a round; later batches are sized from how long the last one took.
FIRST_BATCH = 200
MIN_BATCH = 10
MAX_BATCH = 1000
#: Seconds a batch should hold the store's write lock (the writer's events wait meanwhile).
BATCH_TARGET = 0.05
#: Where deleted runs' log folders wait to be removed, in their DAG's log folder: a name no
#: run id of dagd's has (they never start with a dot), so neither `dagd logs` nor a run ever
#: looks there, on the same filesystem as the run folders (moving one there is a rename).
TRASH = ".removing"

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
    folders = await _remove_logs(store, log_dir)
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
        folders += await _remove_logs(store, log_dir)
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


async def _remove_logs(store: Store, log_dir: Path) -> int:
    """Remove the log folders of deleted runs (`Store.log_removals`): each is moved aside under
    the store's write lock (`_detach`), then removed with every folder moved aside before,
    outside the lock. What cannot be moved stays on the store's list, what cannot be removed
    stays aside: both are tried again next round (logged). Returns how many folders were
    removed. Raises `sqlite3.Error` if the store's list cannot be read or written."""
    problems: list[str] = []

    def detach(dag_id: str, run_id: str) -> bool:
        try:
            _detach(log_dir, dag_id, run_id)
        except ValueError:
            pass  # an id no log folder can have: the run never had one
        except OSError as exc:
            problems.append(f"{exc.filename or log_dir}: {exc.strerror}")
            return False
        return True

    await store.take_log_removals(detach)
    removed, failed = await trio.to_thread.run_sync(_remove_detached, log_dir)
    problems += failed
    if problems:
        log.warning(
            "history retention: cannot remove the logs of %d deleted runs (%s); trying again"
            " in %gs",
            len(problems),
            problems[0],
            PRUNE_INTERVAL,
        )
    return removed


def _detach(log_dir: Path, dag_id: str, run_id: str) -> None:
    """Move one deleted run's log folder into its DAG's `TRASH` folder (a rename: quick, as
    it runs under the store's write lock). Nothing to do when it has none. Raises ValueError
    for an id no log folder can have (`run_logs`), OSError if it cannot be moved, or if what
    is where the folder would be is not a folder (a symlink is not followed)."""
    folder = run_logs(log_dir, dag_id, run_id)
    try:
        mode = folder.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    trash = folder.parent / TRASH
    trash.mkdir(exist_ok=True)
    folder.rename(trash / secrets.token_hex(8))


def _remove_detached(log_dir: Path) -> tuple[int, list[str]]:
    """Remove every log folder moved aside (`_detach`), this round or before a crash, and the
    `TRASH` folders once empty: (how many log folders were removed, what could not be, one
    line each). One look per DAG log folder when there is nothing to remove."""
    removed = 0
    problems: list[str] = []
    try:
        with os.scandir(log_dir) as entries:
            trashes = [Path(e.path, TRASH) for e in entries if e.is_dir()]
    except FileNotFoundError:
        return 0, []
    except OSError as exc:
        return 0, [f"{log_dir}: {exc.strerror}"]
    for trash in trashes:
        try:
            with os.scandir(trash) as entries:
                waiting = [e.path for e in entries]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            problems.append(f"{trash}: {exc.strerror}")
            continue
        for path in waiting:
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{exc.filename or path}: {exc.strerror}")
                continue
            removed += 1
        with contextlib.suppress(OSError):  # not empty: something could not be removed
            trash.rmdir()
    return removed, problems
