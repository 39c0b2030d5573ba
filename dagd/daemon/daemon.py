"""The composition root: one nursery holding the store writer, the scheduler, the DAG folder
watcher, every run, and (if asked) the WebSocket server.

Use it from any trio program:

    async with dagd.open_daemon(config) as daemon:
        run_id = await daemon.trigger("etl", {"date": "2024-01-01"})
        async for event in daemon.events(["etl"]):
            ...

`dagd serve` is this plus signal handling and the WebSocket server.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from dagd.core.config import Config
from dagd.core.events import (
    EVENT_TYPES,
    DagEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import DagSpec, RunStatus, StepStatus
from dagd.core.runstate import RunState, duration_ms
from dagd.core.spec import DagSpecError
from dagd.core.timefmt import RunIdFactory, scheduled_run_id
from dagd.daemon.dagfolder import dag_files, load_dag_file
from dagd.daemon.hub import Hub, Subscriber
from dagd.daemon.scheduler import CronScheduler
from dagd.daemon.store import RecordLeftover, RunRecord, StepRecord, Store, StoredEvent
from dagd.runtime.engine import RunDriver
from dagd.runtime.executor import Executor, StepContext
from dagd.runtime.local.procs import (
    boot_id,
    kill_leftover_group,
    kill_processes_and_groups,
    process_start,
    processes_of_runs,
)

log = logging.getLogger("dagd")

DAG_EVENT_CLASSES = tuple(EVENT_TYPES)
INTERRUPTED = "interrupted: the daemon stopped"
SHUTTING_DOWN = "cancelled: the daemon is shutting down"


class DaemonError(Exception):
    """A request the daemon cannot carry out (unknown DAG or run, wrong state); safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define
class DagInfo:
    id: str
    description: str
    schedule: str | None
    next_run: float | None
    steps: list[str]
    tags: list[str]
    params: dict[str, str]
    source: str | None


class Daemon:
    """Runs DAGs from a folder, on schedule and on request, recording everything in SQLite."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store = Store.open(config.db_path)
        self.hub = Hub()
        self.store.on_commit = self.hub.publish
        self.dags: dict[str, DagSpec] = {}
        self.problems: dict[str, str] = {}  # file -> error text, for broken DAG files
        # path -> ((mtime_ns, ctime_ns, size, inode), or None to force a look; dag id)
        self._files: dict[Path, tuple[tuple[int, ...] | None, str | None]] = {}
        self._duplicates: set[Path] = set()  # files refused because their DAG id was taken
        self.step_slots = trio.CapacityLimiter(config.max_parallel_steps)
        self.executor = Executor(
            log_dir=config.log_dir, grace=config.kill_grace, on_spawn=self._record_process
        )
        self.active: dict[str, RunDriver] = {}
        self._queues: dict[str, deque[RunState]] = {}  # runs waiting for max_active_runs
        self._running_per_dag: dict[str, int] = {}
        self._recent: OrderedDict[str, RunState] = OrderedDict()  # finished, for retry/snapshot
        self._run_ids = RunIdFactory()
        self._boot_id = boot_id()
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._retrying: set[str] = set()  # run ids between a retry request and its queueing
        self._idle = trio.Event()
        self.url: str | None = None  # set by the WebSocket server once it listens
        #: Called after the runs have stopped and their events are committed (the server
        #: uses it to deliver the final events and close its connections with 1001).
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.scheduler = CronScheduler(clock, self._fire_scheduled, self.store.record_slot)

    # ------------------------------------------------------------ lifecycle

    async def start(self, nursery: trio.Nursery) -> None:
        """Recover from the previous process, load the DAGs and start the background tasks."""
        self._nursery = nursery
        await nursery.start(self.store.writer)
        await nursery.start(self.store.checkpointer)
        self.recover()
        self.scheduler.last_slots.update(self.store.schedule_slots())
        self.reload()
        self._accepting = True
        await nursery.start(self.scheduler.run)
        nursery.start_soon(self._watch_folder)
        nursery.start_soon(self._prune_loop)

    async def shutdown(self, reason: str = SHUTTING_DOWN) -> None:
        """Stop accepting runs, cancel the running ones (their steps get SIGTERM, then SIGKILL
        after kill_grace), wait for them to end, and commit every event."""
        self._accepting = False
        for queue in self._queues.values():
            while queue:
                state = queue.popleft()
                if not state.status.finished:
                    self._publish_all(state.cancel(self.clock(), reason))
        for driver in list(self.active.values()):
            driver.cancel(reason)
        with trio.move_on_after(self.config.kill_grace + 1.5):
            while self.active:
                self._idle = trio.Event()
                await self._idle.wait()
        await self.store.flush()
        for hook in self.on_shutdown:
            await hook()
        self.hub.close_all()

    # -------------------------------------------------------------- recovery

    def recover(self) -> None:
        """Close out what a previous process left queued or running: nothing stays running."""
        runs, steps = self.store.unfinished()
        if not runs:
            return
        now = self.clock()
        by_run: dict[str, list[StepRecord]] = {}
        for step in steps:
            by_run.setdefault(step.run_id, []).append(step)
            if step.pgid is not None and kill_leftover_group(
                step.pgid, step.proc_start, step.boot_id
            ):
                log.warning(
                    "killed leftover processes of %s/%s (process group %s)",
                    step.run_id,
                    step.step_id,
                    step.pgid,
                )
        # Then whatever still carries one of these runs in its environment: a group that was
        # spawned but not yet recorded when the daemon died, or a process that left its group.
        strays = processes_of_runs({run.run_id for run in runs})
        if strays:
            kill_processes_and_groups(sorted(strays))
            for run_id in sorted(set(strays.values())):
                pids = sorted(pid for pid, rid in strays.items() if rid == run_id)
                log.warning("killed leftover processes of run %s: %s", run_id, pids)
        for run in runs:
            for step in by_run.get(run.run_id, []):
                if step.status in ("running", "retrying", "pending"):
                    status = StepStatus.FAILED if step.status != "pending" else StepStatus.CANCELLED
                    self.publish(
                        StepStatusEvent(
                            run.dag_id,
                            run.run_id,
                            step.step_id,
                            status,
                            step.start_time,
                            now,
                            duration_ms(step.start_time, now),
                            step.retry_count,
                            INTERRUPTED,
                            now,
                        )
                    )
            self.publish(ErrorEvent(run.dag_id, run.run_id, None, INTERRUPTED, now))
            self.publish(DagRunStatusEvent(run.dag_id, run.run_id, RunStatus.FAILED, now))
            log.warning(
                "run %s of %s was %s when the daemon stopped: marked failed",
                run.run_id,
                run.dag_id,
                run.status,
            )

    # ------------------------------------------------------------ DAG folder

    def reload(self) -> None:
        """Pick up added, changed and removed DAG files. A broken file keeps its last good
        version running, and its problems are logged and published as an error event."""
        folder = self.config.dags_dir
        seen: set[Path] = set()
        changed = freed = False
        paths = dag_files(folder) if folder.is_dir() else []
        for path in paths:
            seen.add(path)
            try:
                info = path.stat()
                # An edit shows in one of these even within one coarse mtime tick: editors
                # that save by rename make a new inode, and a write moves ctime too.
                mtime = (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)
            except OSError:
                continue
            old = self._files.get(path)
            if old is not None and old[0] == mtime:
                continue
            changed = True
            old_id = old[1] if old else None
            try:
                dag = load_dag_file(path)
            except DagSpecError as exc:
                self._refuse(path, mtime, old_id, "\n".join(map(str, exc.problems)))
                continue
            other = self.dags.get(dag.id)
            if other is not None and other.source != str(path):
                text = f"{path}: DAG id {dag.id!r} is already used by {other.source}"
                self._refuse(path, mtime, old_id, text, duplicate=True)
                continue
            if old_id is not None and old_id != dag.id:
                freed = self.dags.pop(old_id, None) is not None or freed
            self.dags[dag.id] = dag
            self._files[path] = (mtime, dag.id)
            self._duplicates.discard(path)
            self.problems.pop(str(path), None)
            log.info("%s DAG %s from %s", "reloaded" if old else "loaded", dag.id, path.name)
        for path in list(self._files):
            if path not in seen:
                _, dag_id = self._files.pop(path)
                self.problems.pop(str(path), None)
                if dag_id is not None and (d := self.dags.get(dag_id)) and d.source == str(path):
                    del self.dags[dag_id]
                    freed = True
                    log.info("removed DAG %s (%s was deleted)", dag_id, path.name)
                changed = True
        self._duplicates &= set(self._files)
        if freed and self._duplicates:
            # A DAG id was given up: a file refused for using it gets another look now,
            # not only at its next edit.
            for dup in self._duplicates:
                self._files[dup] = (None, self._files[dup][1])
            self.reload()
            return
        if changed:
            self.scheduler.set_dags(self.dags)

    def _refuse(
        self,
        path: Path,
        mtime: tuple[int, ...],
        old_id: str | None,
        text: str,
        duplicate: bool = False,
    ) -> None:
        """A DAG file that cannot be loaded: its last good version (if any) stays."""
        self._files[path] = (mtime, old_id)
        if duplicate:
            self._duplicates.add(path)
        else:
            self._duplicates.discard(path)
        self.problems[str(path)] = text
        log.error("cannot load DAG file (keeping the last good version):\n%s", text)
        self.publish(ErrorEvent(old_id or path.stem, None, None, text, self.clock()))

    async def _watch_folder(self) -> None:
        while True:
            await trio.sleep(self.config.reload_interval)
            self.reload()

    async def _prune_loop(self) -> None:
        while True:
            await trio.sleep(300)
            deleted = await self.store.prune(
                self.config.event_retention_count, self.config.event_retention_age, self.clock()
            )
            if deleted:
                log.info("event log retention: deleted %d old events", deleted)

    # ----------------------------------------------------------------- events

    def publish(self, event: DagEvent) -> StoredEvent:
        """Number, persist and (once committed) fan out one event. Never blocks."""
        return self.store.publish(event)

    def _publish_all(self, effects: Iterable[object]) -> None:
        for effect in effects:
            if isinstance(effect, DAG_EVENT_CLASSES):
                self.publish(effect)

    def subscribe(self, dag_ids: Iterable[str] | None = None, buffer: int = 0) -> Subscriber:
        """A bounded queue of committed events (StoredEvent) for the given DAGs (None: all)."""
        return self.hub.subscribe(dag_ids, buffer or self.config.server.send_buffer)

    def events(self, dag_ids: Iterable[str] | None = None, buffer: int = 0) -> EventStream:
        """Every event committed from this call on (with its seq), for the given DAGs (None:
        all). Subscribes at once, so nothing published after the call is missed."""
        return EventStream(self.subscribe(dag_ids, buffer))

    def _record_process(self, ctx: StepContext, pid: int) -> None:
        self.store.record_leftover(
            RecordLeftover(ctx.run_id, ctx.step_id, pid, process_start(pid), self._boot_id)
        )

    # ------------------------------------------------------------------ runs

    def _dag(self, dag_id: str) -> DagSpec:
        dag = self.dags.get(dag_id)
        if dag is None:
            known = ", ".join(sorted(self.dags)) or "none"
            raise DaemonError("unknown_dag", f"no DAG {dag_id!r} (DAGs: {known})")
        return dag

    async def trigger(self, dag_id: str, params: Mapping[str, Any] | None = None) -> str:
        """Queue a manual run; returns its run id. It starts when max_active_runs allows."""
        dag = self._dag(dag_id)
        try:
            bound = dag.bind_params(params)
        except ValueError as exc:
            raise DaemonError("invalid_params", str(exc)) from None
        if not self._accepting:
            raise DaemonError("shutting_down", "the daemon is shutting down")
        run_id = self._run_ids.make("manual", self.clock())
        # The run is on disk before anyone hears of it (a crash right after the answer cannot
        # lose it: the next start closes it out), and its events follow the answer.
        self.store.record_run(run_id, dag.id, bound, self.clock())
        await self.store.flush()
        return self._enqueue(dag, run_id, bound, recorded=True)

    def _fire_scheduled(self, dag: DagSpec, slot: datetime) -> None:
        if self._accepting:
            # Run ids key runs across every DAG (active runs, cancel/retry, the runs table), so
            # the id of a slot's run names the DAG: DAGs sharing a schedule fire the same slots.
            run_id = f"{scheduled_run_id(slot)}__{dag.id}"
            self._enqueue(dag, run_id, dag.bind_params(None))

    def _enqueue(
        self, dag: DagSpec, run_id: str, params: dict[str, str], recorded: bool = False
    ) -> str:
        if not self._accepting:
            raise DaemonError("shutting_down", "the daemon is shutting down")
        if self._waiting_or_running(run_id):
            raise DaemonError("duplicate_run", f"run {run_id} is already queued or running")
        now = self.clock()
        state = RunState(dag, run_id, params, progress_interval=self.config.progress_interval)
        if not recorded:
            self.store.record_run(run_id, dag.id, params, now)
        self.publish(state.run_event(now))  # queued
        self._queues.setdefault(dag.id, deque()).append(state)
        self._launch(dag.id)
        return run_id

    def _launch(self, dag_id: str) -> None:
        """Start queued runs of `dag_id` while its max_active_runs allows."""
        queue = self._queues.get(dag_id)
        while queue and self._accepting:
            state = queue[0]
            if self._running_per_dag.get(dag_id, 0) >= state.dag.max_active_runs:
                return
            queue.popleft()
            driver = RunDriver(
                state,
                self.executor,
                self.publish,
                clock=self.clock,
                step_slots=self.step_slots,
            )
            self.active[state.run_id] = driver
            self._running_per_dag[dag_id] = self._running_per_dag.get(dag_id, 0) + 1
            assert self._nursery is not None
            self._nursery.start_soon(self._drive, driver, name=f"run {state.run_id}")

    async def _drive(self, driver: RunDriver) -> None:
        state = driver.state
        log.info("run %s of %s started", state.run_id, state.dag.id)
        try:
            await driver.run()
            took = (state.ended_at or 0.0) - (state.started_at or 0.0)
            failed = sorted(sid for sid, st in state.steps.items() if st.status.value == "failed")
            log.info(
                "run %s of %s: %s in %.1fs%s",
                state.run_id,
                state.dag.id,
                state.status.value,
                max(0.0, took),
                f" (failed: {', '.join(failed)})" if failed else "",
            )
        except Exception as exc:
            # A bug in one run must not take the daemon and every other run down with it:
            # record it, close the run out as failed, and carry on.
            log.exception("run %s of %s crashed", state.run_id, state.dag.id)
            now = self.clock()
            self.publish(
                ErrorEvent(state.dag.id, state.run_id, None, f"internal error: {exc!r}", now)
            )
            if not state.status.finished:
                state.status = RunStatus.FAILED
                self.publish(state.run_event(now))
        finally:
            del self.active[state.run_id]
            self._running_per_dag[state.dag.id] -= 1
            self._remember(state)
            self._idle.set()
            self._launch(state.dag.id)

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        driver = self.active.get(run_id)
        if driver is not None:
            driver.cancel(reason)
            return
        for queue in self._queues.values():
            for state in queue:
                if state.run_id == run_id:
                    queue.remove(state)  # a new run or a retried one, waiting for a slot
                    self._publish_all(state.cancel(self.clock(), reason))
                    self._remember(state)
                    return
        record = await self.store.get_run(run_id)
        if record is None:
            raise DaemonError("unknown_run", f"no run {run_id!r}")
        raise DaemonError("not_running", f"run {run_id} is already {record[0].status}")

    async def retry(self, run_id: str) -> str:
        """Run a failed or cancelled run again: successful steps are kept, the rest rerun.

        Like `trigger`, it answers once the run is stored as queued again; its events (queued,
        then running when the DAG's max_active_runs allows) follow the answer."""
        if run_id in self._retrying or self._waiting_or_running(run_id):
            raise DaemonError("not_finished", f"run {run_id} has not finished yet")
        # Reserved until queued: two retries of one run at once must not both get through the
        # awaits below.
        self._retrying.add(run_id)
        try:
            return await self._retry(run_id)
        finally:
            self._retrying.discard(run_id)

    def _waiting_or_running(self, run_id: str) -> bool:
        return run_id in self.active or any(
            s.run_id == run_id for q in self._queues.values() for s in q
        )

    def _remember(self, state: RunState) -> None:
        """Keep a finished run at hand (for retry and snapshots), the newest 200."""
        self._recent[state.run_id] = state
        while len(self._recent) > 200:
            self._recent.popitem(last=False)

    async def _retry(self, run_id: str) -> str:
        state = self._recent.pop(run_id, None)
        if state is None:
            found = await self.store.get_run(run_id)
            if found is None:
                raise DaemonError("unknown_run", f"no run {run_id!r}")
            record, steps = found
            state = RunState.restore(
                self._dag(record.dag_id),
                run_id,
                record.params,
                RunStatus(record.status)
                if record.status in ("success", "failed", "cancelled")
                else RunStatus.FAILED,
                {
                    s.step_id: (
                        StepStatus(s.status),
                        s.retry_count,
                        s.start_time,
                        s.end_time,
                        s.error,
                        s.attempt,
                    )
                    for s in steps
                },
                progress_interval=self.config.progress_interval,
            )
        if state.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            self._remember(state)
            raise DaemonError(
                "not_retryable",
                f"run {run_id} is {state.status}; only failed or cancelled runs can be retried",
            )
        if not self._accepting:
            self._remember(state)
            raise DaemonError("shutting_down", "the daemon is shutting down")
        self.store.record_requeue(run_id)
        await self.store.flush()
        if not self._accepting:  # the daemon began to stop meanwhile (as for trigger, the
            self._remember(state)  # record says queued; the next start closes it out)
            raise DaemonError("shutting_down", "the daemon is shutting down")
        # queued again (clients see it wait for a max_active_runs slot), then started by _launch
        self._publish_all(state.requeue(self.clock()))
        self._queues.setdefault(state.dag.id, deque()).append(state)
        self._launch(state.dag.id)
        return run_id

    # --------------------------------------------------------------- queries

    def list_dags(self) -> list[DagInfo]:
        return [
            DagInfo(
                dag.id,
                dag.description,
                dag.schedule,
                self.scheduler.next_fire(dag.id),
                list(dag.steps),
                list(dag.tags),
                dict(dag.params),
                dag.source,
            )
            for dag in sorted(self.dags.values(), key=lambda d: d.id)
        ]

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        return await self.store.list_runs(dag_id, limit)

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        return await self.store.get_run(run_id)

    def run_states(self, dag_ids: set[str] | None = None) -> list[RunState]:
        """Active and queued runs, then recently finished ones, for the given DAGs."""
        states = [d.state for d in self.active.values()]
        states += [s for q in self._queues.values() for s in q]
        states += list(self._recent.values())
        return [s for s in states if dag_ids is None or s.dag.id in dag_ids]

    def snapshot(self, dag_ids: set[str] | None = None) -> tuple[list[DagEvent], int]:
        """The current state of active runs and each DAG's latest finished run, as events
        (without seq), and the seq the caller can replay from to continue without a gap."""
        seq = self.store.committed_seq
        now = self.clock()
        latest: dict[str, RunState] = {}
        chosen: list[RunState] = []
        for state in self.run_states(dag_ids):
            if not state.status.finished:
                chosen.append(state)
            else:
                latest[state.dag.id] = state
        chosen += latest.values()
        events: list[DagEvent] = []
        for state in chosen:
            events.append(state.run_event(now))
            events.extend(state.step_event(sid, now) for sid in state.steps)
            events.append(state.progress(now))
        return events, seq


class EventStream:
    """Async iterator of DagEvents over a hub subscription. If the consumer falls more than
    `buffer` events behind, iteration raises DaemonError('slow_consumer') instead of making the
    daemon wait; `close()` (or `with`) ends the subscription."""

    def __init__(self, sub: Subscriber) -> None:
        self._sub = sub
        self._taken: deque[object] = deque()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DagEvent:
        # Take everything queued at each wake-up: a consumer that took one event per turn
        # would get fewer turns than a fast run publishes events, and be cut off. Memory stays
        # bounded: at most one buffer here and one in the subscription.
        if not self._taken:
            sub = self._sub
            try:
                self._taken.append(await sub.get())
            except trio.EndOfChannel:
                if sub.overflowed:
                    raise DaemonError(
                        "slow_consumer", "the event consumer fell behind its buffer"
                    ) from None
                raise StopAsyncIteration from None
            while True:
                try:
                    self._taken.append(sub.get_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        stored = self._taken.popleft()
        assert isinstance(stored, StoredEvent)  # only the hub puts in this subscription
        return stored.event

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Daemon", "DaemonError", "DagInfo", "EventStream"]
