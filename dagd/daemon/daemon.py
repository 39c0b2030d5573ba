"""The daemon: DAGs from a folder, run on schedule and on request, every event recorded.

It is given its collaborators (dagd/app.py builds them): the store (SQLite history and the
event log), the hub (fan-out of committed events), the step executors (by name) and a
wall clock. It owns run admission (admission.py), the DAG folder (dagfolder.py), the cron
scheduler (scheduler.py: it fires into the daemon, so the daemon makes it) and crash recovery
at start (recovery.py).

Use it through `dagd.open_daemon`:

    async with dagd.open_daemon(config) as daemon:
        run_id = await daemon.trigger("etl", {"date": "2024-01-01"})
        async for event in daemon.events(["etl"]):
            ...
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import trio

from dagd.core.backfill import RangeError, backfill_slots, parse_bound
from dagd.core.config import Config
from dagd.core.cron import Schedule
from dagd.core.dagrefs import link_cycles, link_problems
from dagd.core.dagsnapshot import (
    SHORT_VERSION,
    SnapshotError,
    dag_from_json,
    dag_to_json,
    dag_version,
)
from dagd.core.detail import dag_detail, live_run_detail, stored_run_detail
from dagd.core.events import DagEvent, DagRunStatusEvent, DagStatusEvent, ErrorEvent
from dagd.core.logslice import MAX_LOG_READ, LogSlice
from dagd.core.model import (
    MAX_SUBDAG_DEPTH,
    RETRYABLE_RUN,
    SUBDAG_EXECUTOR,
    DagSpec,
    RunStatus,
    StepStatus,
)
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    BackfillAction,
    BackfillResult,
    BackfillSlot,
    BrokenFile,
    DagDetail,
    DagSummary,
    FileProblem,
    RunDetail,
)
from dagd.core.protocol.requests import MAX_BACKFILL_SLOTS
from dagd.core.records import AttemptRecord, RunRecord
from dagd.core.runstate import RunState
from dagd.core.text import one_line
from dagd.core.timefmt import RunIdFactory, slot_of_run_id, slot_run_id
from dagd.daemon.admission import Admission
from dagd.daemon.dagfolder import DagFolder, problems_text
from dagd.daemon.errors import DaemonError
from dagd.daemon.eventstream import EventStream
from dagd.daemon.health import DaemonHealth
from dagd.daemon.hub import Hub, Subscriber
from dagd.daemon.logreader import LogReader
from dagd.daemon.recovery import LeftoverRecorder, close_out_state, recover
from dagd.daemon.retention import PRUNE_INTERVAL, prune_once
from dagd.daemon.scheduler import CronScheduler
from dagd.daemon.stats import DaemonStats
from dagd.daemon.store import StepRecord, StorageUnavailable, Store, StoredEvent
from dagd.daemon.subdag import ChildOutcome, SubDagExecutor
from dagd.runtime.engine import RunDriver
from dagd.runtime.executor import StepExecutor, executor_registry, kill_steps_now
from dagd.runtime.notify import Notifier
from dagd.runtime.pools import Pools

log = logging.getLogger("dagd")

SHUTTING_DOWN = "cancelled: the daemon is shutting down"
#: How many parsed stored definitions (by version) stay in memory for get_run, retry and
#: backfill: parsing one takes about 0.05 s for 1,000 steps, 0.24 s for 5,000.
PARSED_DEFINITIONS = 16
#: How a failing state file is reported (error events, refused triggers, skipped cron slots).
STORAGE_FAILED = "storage unavailable, events held until writes succeed again"
#: Seconds from the start to the first round of retention (dagd/daemon/retention.py).
FIRST_PRUNE_DELAY = 10.0


class Daemon:
    """Runs DAGs from a folder, on schedule and on request, recording everything in the store.

    Build it with its collaborators, then `await start(nursery)`; `stop()` ends the runs. The
    composition root (dagd/app.py, `open_daemon`) does all three and orders the rest of the
    shutdown (flush the store, close the network and the hub, close the store).
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        hub: Hub,
        executors: StepExecutor | Mapping[str, StepExecutor],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.hub = hub
        #: Counters and histograms for /metrics: the store's, which counts what it commits.
        self.stats: DaemonStats = store.stats
        self.executors = executors  # one for every step, or by executor name
        # What runs the steps of runs: the executors, and the daemon's own for sub-DAG steps.
        self._run_executors: dict[str, StepExecutor] = {
            **(executors if isinstance(executors, Mapping) else executor_registry(executors)),
            SUBDAG_EXECUTOR: SubDagExecutor(self),
        }
        # Child runs a sub-DAG step waits for: run id -> set once the run is over.
        self._waiters: dict[str, trio.Event] = {}
        # `after`: DAG id -> the DAGs each of its successful runs triggers (of the loaded DAGs
        # whose links have no cycle), made at each reload.
        self._followers: dict[str, tuple[str, ...]] = {}
        self._record_leftover = LeftoverRecorder(store)  # for recovery after a crash
        store.on_write_error = self._storage_failed  # a failing disk becomes error events
        self.folder = DagFolder(
            config.dags_dir, log, executors=config.executor_names, pools=config.pools
        )
        # config.toml's [pools], shared by every run of this daemon (dagd/runtime/pools.py).
        self.pools = Pools(config.pools)
        self.step_slots = trio.CapacityLimiter(config.max_parallel_steps)
        # Sends the notifications of `notify` handlers (dagd/runtime/notify.py).
        self.notifier = Notifier(hidden=config.secret_env_names)
        self.admission = Admission()
        self.logs = LogReader(config.log_dir, store, self.admission.find, self.run_definition)
        self.active: dict[str, RunDriver] = {}  # running runs by run id
        self.scheduler = CronScheduler(
            clock, self._fire_scheduled, store.record_slot, has_run=self._has_slot_run
        )
        # Slots (UNIX seconds) after the scheduler's last one whose runs exist already, by DAG
        # id: a backfill made them while the DAG was paused. Catch-up passes over them.
        self._ahead: dict[str, set[float]] = {}
        self._run_ids = RunIdFactory()
        # Each loaded DAG's definition as stored with its runs, by DAG id, with that very
        # DagSpec: (dag, (version, JSON text)), or (dag, None) if it could not be serialized.
        # Made when the DAG loads, beside its parse, so a trigger only looks it up.
        self._versions: dict[str, tuple[DagSpec, tuple[str, str] | None]] = {}
        self._stored_versions: set[str] = set()  # queued for the store by this process
        # Stored definitions parsed for run_definition, by version, least recently used
        # first. A version names its content (a hash of the JSON), so an entry never goes
        # stale; DagSpecs are immutable, so runs may share one.
        self._parsed: OrderedDict[str, DagSpec] = OrderedDict()
        # The file error each loaded DAG had after the last reload (None: its file is fine),
        # to publish a dag_status event when it appears or clears.
        self._file_errors: dict[str, str | None] = {}
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._idle = trio.Event()
        self._runs_pruned = 0  # runs history retention deleted: a part of runs_version

    # ------------------------------------------------------------ lifecycle

    async def start(self, nursery: trio.Nursery) -> None:
        """Close out what a previous process left (recovery.py), load the DAG folder, and start
        the scheduler, the folder watcher and retention in `nursery`, where runs will run too.
        From then on the daemon accepts runs. The store's writer must be running already."""
        self._nursery = nursery
        executors = self.executors  # one executor, or the registry by name
        registry = executors if isinstance(executors, Mapping) else executor_registry(executors)
        self.scheduler.last_slots.update(self.store.schedule_slots())
        for dag_id in self.store.paused_dags():
            self.scheduler.set_paused(dag_id, True)
        await self.reload()
        await self._load_ahead()
        # After the folder is loaded: a run recorded before dagd stored each run's definition
        # is closed out with its DAG's loaded steps.
        await recover(self.store, registry, self.publish, self.clock(), self.dags)
        self._accepting = True
        await nursery.start(self.scheduler.run)
        nursery.start_soon(self._watch_folder)
        nursery.start_soon(self._prune_loop)

    async def _load_ahead(self) -> None:
        """Find the runs a backfill made for slots the scheduler has yet to reach, of each DAG
        with missed slots (paused, or dagd was down): its first tick catches up without them.
        Scheduled run ids sort by slot (`scheduled__<UTC ISO time>__<dag>`), so one range read
        per such DAG finds them."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        for dag in self.dags.values():
            last = self.scheduler.last_slots.get(dag.id)
            if not dag.schedule or last is None:
                continue
            after = datetime.fromtimestamp(last, UTC)
            if Schedule(dag.schedule, dag.timezone).next_after(after) > now:
                continue  # nothing missed: nothing to catch up
            ids = await self.store.run_ids_between(
                dag.id, slot_run_id(dag.id, after), "scheduled_~"
            )
            for run_id in ids:
                slot = slot_of_run_id(dag.id, run_id)
                if slot is not None:
                    self._ahead.setdefault(dag.id, set()).add(slot.timestamp())

    def _has_slot_run(self, dag_id: str, slot: datetime) -> bool:
        """The scheduler's `has_run`: whether the run of `dag_id`'s `slot` exists already (a
        backfill made it). Asked in slot order, so the slots up to this one are forgotten."""
        at = slot.timestamp()
        ahead = self._ahead.get(dag_id)
        found = ahead is not None and at in ahead
        if ahead:
            kept = {t for t in ahead if t > at}
            if kept:
                self._ahead[dag_id] = kept
            else:
                del self._ahead[dag_id]
        return found or self.admission.find(slot_run_id(dag_id, slot)) is not None

    async def stop(self, reason: str = SHUTTING_DOWN) -> None:
        """Stop accepting runs, cancel the queued ones, cancel the running ones (their steps get
        SIGTERM, then SIGKILL after config.kill_grace seconds; then their on_cancel and always
        handlers run, for config.handler_grace seconds at most) and wait for them to end, at
        most kill_grace + 1.5 seconds, plus handler_grace + kill_grace when a run has handlers.
        Their events are published, not yet committed: the caller flushes the store (see
        dagd/app.py)."""
        self._accepting = False
        for state in self.admission.drain():
            if not state.status.finished:
                self._publish_all(state.cancel(self.clock(), reason))
        handlers = False
        for driver in list(self.active.values()):
            driver.cancel(reason)
            handlers = handlers or bool(driver.state.dag.handlers)
        wait = self.config.kill_grace + 1.5
        if handlers:
            wait += self.config.handler_grace + self.config.kill_grace
        with trio.move_on_after(wait):
            while self.active:
                self._idle = trio.Event()
                await self._idle.wait()

    def kill_now(self) -> None:
        """A second Ctrl-C during `stop`: SIGKILL every running step at once (on each executor
        that can), and end every run's handlers now: running ones are stopped, the others
        never start. The runs still end as recorded (cancelled, or the outcome their handlers
        were running for)."""
        kill_steps_now(self.executors)
        for driver in list(self.active.values()):
            driver.stop_handlers("stopped: dagd was told to stop again")

    # ------------------------------------------------------------ DAG folder

    @property
    def dags(self) -> dict[str, DagSpec]:
        """The loaded DAGs by id (the folder's; do not change it)."""
        return self.folder.dags

    @property
    def problems(self) -> dict[str, str]:
        """What is wrong with each broken or refused DAG file, by file path: the problems'
        text, one per line."""
        return {path: problems_text(problems) for path, problems in self.folder.problems.items()}

    def file_error(self, dag_id: str) -> str | None:
        """The problems of a loaded DAG's file while it is broken on disk and dagd runs its last
        good version (one per line, each naming the file), else None."""
        dag = self.dags.get(dag_id)
        if dag is None or dag.source is None:
            return None
        problems = self.folder.problems.get(dag.source)
        return problems_text(problems) if problems else None

    async def reload(self) -> None:
        """Pick up added, changed and removed DAG files (dagfolder.py), read in a worker thread
        (importing `call` modules may take a while: the loop and its clients go on). A broken
        file keeps its last good version running; its problems are logged and published as an
        error event (with the last good DAG's id, else the file's stem). A loaded DAG whose
        file breaks or loads again gets a `dag_status` event with its file error (None once
        fixed)."""
        reloaded = await self.folder.reload_in_thread()
        for refused in reloaded.refused:
            self.publish(ErrorEvent(refused.dag_id, None, None, refused.text, self.clock()))
        if reloaded.changed:
            self._follow(self.dags)
            self._publish_file_errors()
            self.scheduler.set_dags(self.dags)
            for dag in self.dags.values():
                self._definition(dag)
            # Waiting runs are admitted under the current max_active_runs (docs/dags.md): a
            # raised limit starts more of them now.
            for dag_id in self.admission.waiting_dags():
                self._launch(dag_id)

    def _follow(self, dags: Mapping[str, DagSpec]) -> None:
        """Rebuild `_followers` from the loaded DAGs' `after` keys. DAGs whose links form a
        cycle (dagd/core/dagrefs.py; `dagd validate` refuses them) take no part: logged."""
        problems = link_problems(dags)
        for dag_id, found in problems.items():
            for message, step, field in found:
                where = f" step {step!r}" if step else ""
                log.error("DAG %s%s field %r: %s", dag_id, where, field, message)
        cyclic = {dag_id for cycle in link_cycles(dags) for dag_id in cycle}
        followers: dict[str, list[str]] = {}
        for dag in dags.values():
            if dag.id not in cyclic:
                for upstream in dag.after:
                    if upstream in dags and upstream not in cyclic:
                        followers.setdefault(upstream, []).append(dag.id)
        self._followers = {dag_id: tuple(sorted(ids)) for dag_id, ids in followers.items()}

    def _publish_file_errors(self) -> None:
        """A `dag_status` event for each loaded DAG whose file error appeared, changed or
        cleared since the last reload."""
        now = self.clock()
        errors = {dag_id: self.file_error(dag_id) for dag_id in self.dags}
        for dag_id, text in errors.items():
            if text != self._file_errors.get(dag_id):
                self._publish_status(dag_id, now, text)
        self._file_errors = errors

    def _publish_status(self, dag_id: str, now: float, file_error: str | None) -> None:
        paused = dag_id in self.scheduler.paused
        self.publish(DagStatusEvent(dag_id, paused, file_error, now))

    async def _watch_folder(self) -> None:
        while True:
            await trio.sleep(self.config.reload_interval)
            await self.reload()

    async def _prune_loop(self) -> None:
        # The first round soon after the start (once recovery and the first runs are under
        # way), so a changed [history] is applied, and seen in the log, without waiting
        # PRUNE_INTERVAL seconds.
        await trio.sleep(FIRST_PRUNE_DELAY)
        while True:
            await prune_once(self.store, self.config, self.clock(), on_pruned=self._forget)
            await trio.sleep(PRUNE_INTERVAL)

    def _forget(self, run_ids: list[str]) -> None:
        """Retention deleted these runs from the store: drop them from the memory of finished
        runs too, or snapshots would still show them and a retry would rebuild a partial row."""
        self._runs_pruned += len(run_ids)
        for run_id in run_ids:
            self.admission.recall(run_id)

    # ----------------------------------------------------------------- events

    def publish(self, event: DagEvent) -> StoredEvent:
        """Number, persist and (once committed) fan out one event; returns it with its seq.
        Never blocks."""
        return self.store.publish(event)

    def _emit(self, event: DagEvent) -> None:
        """`publish` as the engine's Publish (which returns nothing). A run's final status
        also wakes a parent waiting for it and fires the DAGs that run after it: queued
        right after that status, so both reach the store in the same write."""
        self.store.publish(event)
        if (
            (self._waiters or self._followers)
            and type(event) is DagRunStatusEvent
            and event.status.finished
        ):
            self._run_over(event)

    def _run_over(self, event: DagRunStatusEvent) -> None:
        """A run ended: set its waiter, and after a success trigger its followers (`after`).
        A follower that is paused, not loaded, or cannot be queued now is skipped (logged)."""
        waiter = self._waiters.pop(event.run_id, None)
        if waiter is not None:
            waiter.set()
        if event.status is not RunStatus.SUCCESS:
            return
        upstream = self.admission.find(event.run_id)
        given = upstream.params if upstream is not None else {}
        for dag_id in self._followers.get(event.dag_id, ()):
            dag = self.dags.get(dag_id)
            if dag is None or dag_id in self.scheduler.paused:
                continue
            if not self._accepting or self.store.write_error is not None:
                log.warning("run of %s after %s skipped: not accepting runs", dag_id, event.run_id)
                continue
            params = {name: value for name, value in given.items() if name in dag.params}
            run_id = self._run_ids.make("after", self.clock())
            try:
                self._enqueue(dag, run_id, dag.bind_params(params), triggered_by=event.run_id)
            except (DaemonError, ValueError) as exc:
                log.warning("run of %s after %s skipped: %s", dag_id, event.run_id, exc)

    def _publish_all(self, effects: Iterable[object]) -> None:
        """Publish the events among a run state's effects (the rest concern a running run).
        Through `_emit`, as the engine's are: a queued run cancelled here never reaches the
        engine, and its parent waits for its final status all the same."""
        for effect in effects:
            if isinstance(effect, DagEvent):
                self._emit(effect)

    def subscribe(self, dag_ids: Iterable[str] | None = None, buffer: int = 0) -> Subscriber:
        """A bounded queue of committed events (StoredEvent, in seq order) for `dag_ids` (None:
        every DAG), holding at most `buffer` events (0: config.server.send_buffer). A
        subscriber that falls that far behind is cut off (`overflowed`, then the end of its
        queue) rather than making the daemon wait; close it when done."""
        return self.hub.subscribe(dag_ids, buffer or self.config.server.send_buffer)

    def events(self, dag_ids: Iterable[str] | None = None, buffer: int = 0) -> EventStream:
        """Every event committed from this call on, with its seq, for `dag_ids` (None: every
        DAG), as an async iterator of DagEvent. Subscribes at once, so nothing published after
        the call is missed. Iteration raises DaemonError('slow_consumer') if the consumer falls
        more than `buffer` events behind (0: config.server.send_buffer)."""
        return EventStream(self.subscribe(dag_ids, buffer))

    # ------------------------------------------------------- the event log
    # For the network layer (dagd.daemon.api.DaemonService), which never sees the store.

    @property
    def committed_seq(self) -> int:
        """The seq of the newest committed event (0: none yet)."""
        return self.store.committed_seq

    @property
    def runs_version(self) -> tuple[int, int]:
        """A value that changes whenever the stored runs may have: (the store's committed
        write batches, the runs history retention has deleted). Taken before a read of the
        runs, it keys a copy of that read that is current while the value stays (the JSON
        API's run lists, dagd/net/http/api.py)."""
        return (self.store.batches, self._runs_pruned)

    # ---------------------------------------------------------------- health

    def health(self) -> DaemonHealth:
        """The daemon at a glance (dagd/daemon/health.py says what healthy means): loaded
        DAGs, broken or refused DAG files, whether the store writes, queued and running runs
        by DAG (every loaded DAG, 0 if none, and any other DAG with runs), the committed
        seq. From memory only: its cost grows with the DAGs, never with history."""
        queued, running = self.admission.counts()
        zero = dict.fromkeys(self.dags, 0)
        return DaemonHealth(
            dags=len(self.dags),
            broken_dag_files=len(self.folder.problems),
            store_error=self.store.write_error,
            accepting=self._accepting,
            committed_seq=self.store.committed_seq,
            runs_queued=zero | queued,
            runs_running=zero | running,
            uptime=self.stats.uptime(),
        )

    async def events_page(
        self, since: int, until: int | None = None, limit: int = 1000
    ) -> list[tuple[int, str, str]]:
        """(seq, dag_id, wire text) of committed events with since < seq <= until (None: the
        committed seq), oldest first, at most `limit`; read in a worker thread."""
        return await self.store.events_page(since, until, limit)

    async def oldest_seq(self) -> int | None:
        """The lowest seq from which the event log is whole (Store.oldest_seq: history
        retention deletes a finished run's events from the middle of the log and keeps a replay
        floor), None if it is empty."""
        return await self.store.oldest_seq()

    # ------------------------------------------------------------------ runs

    def _dag(self, dag_id: str) -> DagSpec:
        dag = self.dags.get(dag_id)
        if dag is None:
            known = ", ".join(sorted(self.dags)) or "none"
            raise DaemonError("unknown_dag", f"no DAG {dag_id!r} (DAGs: {known})")
        return dag

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise DaemonError("shutting_down", "the daemon is shutting down")

    def _check_writable(self) -> None:
        """Refuse a new run while the store cannot write: it would be answered before it is
        stored (DaemonError 'storage_unavailable')."""
        if self.store.write_error is not None:
            raise _storage_unavailable(self.store.write_error)

    async def _commit(self, run_id: str) -> None:
        """Wait until the queued creation or requeue of `run_id` is committed. If writes fail
        first it is withdrawn (nothing is written later) and DaemonError('storage_unavailable')
        raised; committed already, the caller goes on."""
        try:
            await self.store.flush()
        except StorageUnavailable as exc:
            if self.store.withdraw_run(run_id):
                raise _storage_unavailable(exc.message) from None

    def _storage_failed(self, error: str, dag_ids: set[str]) -> None:
        """The store's `on_write_error`: an `error` event for each DAG whose events are held.
        Held too, it reaches clients with them once writes succeed (docs/protocol.md)."""
        now = self.clock()
        for dag_id in sorted(dag_ids):
            self.publish(ErrorEvent(dag_id, None, None, f"{STORAGE_FAILED}: {error}", now))

    async def trigger(self, dag_id: str, params: Mapping[str, Any] | None = None) -> str:
        """Queue a manual run of `dag_id` with `params` (name -> value; values become text as
        written in TOML, undeclared names are refused); returns its run id.

        It answers once the run is stored as queued, so a crash right after cannot lose it
        (the next start closes it out). Its events (queued, then running when the DAG's
        max_active_runs allows, ...) follow the answer.

        Raises DaemonError with code:
        - `unknown_dag`: no DAG `dag_id` is loaded;
        - `invalid_params`: a param the DAG does not declare;
        - `shutting_down`: the daemon is stopping;
        - `duplicate_run`: a run with the new id is already queued or running (two triggers
          within one clock microsecond can only collide if the clock goes backwards);
        - `storage_unavailable`: the state file cannot be written at the moment (a full disk):
          nothing is queued; try again later.
        """
        dag = self._dag(dag_id)
        try:
            bound = dag.bind_params(params)
        except ValueError as exc:
            raise DaemonError("invalid_params", str(exc)) from None
        self._check_accepting()
        self._check_writable()
        run_id = self._run_ids.make("manual", self.clock())
        self.store.record_run(run_id, dag.id, bound, self.clock(), self._bind(dag))
        await self._commit(run_id)
        return self._enqueue(dag, run_id, bound, recorded=True)

    async def start_child(
        self, dag_id: str, params: Mapping[str, str], parent_run_id: str
    ) -> tuple[str, trio.Event]:
        """Queue a child run of `dag_id` for a sub-DAG step of run `parent_run_id` (subdag.py),
        stored before this returns, like a trigger; its run id (`subdag__<time>`) and an event
        set once it is over. Raises DaemonError as `trigger` does, and ValueError when the
        child would be nested deeper than MAX_SUBDAG_DEPTH runs below a run without parent,
        or would be of a DAG whose run it is inside (a cycle)."""
        # The ancestors' DAGs, nearest first: a DAG among them would wait on itself (under
        # max_active_runs, for ever), a cycle `dagd validate` refuses but the folder may hold.
        chain: list[str] = []
        above = self.admission.find(parent_run_id)
        while above is not None:
            chain.append(above.dag.id)
            above = self.admission.find(above.parent_run_id) if above.parent_run_id else None
        depth = len(chain)
        if dag_id in chain:
            path = " -> ".join([*reversed(chain), dag_id])
            raise ValueError(f"DAG {dag_id!r} would run inside its own run: {path}")
        if depth > MAX_SUBDAG_DEPTH:
            raise ValueError(
                f"sub-DAG runs nest at most {MAX_SUBDAG_DEPTH} deep; this one would be {depth}"
            )
        dag = self._dag(dag_id)
        try:
            bound = dag.bind_params(params)
        except ValueError as exc:
            raise DaemonError("invalid_params", str(exc)) from None
        self._check_accepting()
        self._check_writable()
        run_id = self._run_ids.make("subdag", self.clock())
        self.store.record_run(
            run_id, dag.id, bound, self.clock(), self._bind(dag), parent_run_id=parent_run_id
        )
        # Shielded: once recorded, the child is queued whatever happens to the parent's step
        # meanwhile (a cancel reaches it at the step's next checkpoint, and cancels the child).
        with trio.CancelScope(shield=True):
            await self._commit(run_id)
        done = self._waiters[run_id] = trio.Event()
        try:
            self._enqueue(dag, run_id, bound, recorded=True, parent_run_id=parent_run_id)
        except BaseException:
            del self._waiters[run_id]
            raise
        return run_id, done

    def child_outcome(self, run_id: str) -> ChildOutcome:
        """How the child run `run_id` ended (in memory: a parent asks as soon as it is over)."""
        state = self.admission.find(run_id)
        if state is None:
            return ChildOutcome(run_id, RunStatus.FAILED)
        failed = tuple(
            sid
            for sid, st in state.steps.items()
            if st.status is StepStatus.FAILED and sid not in state.dag.handlers
        )
        return ChildOutcome(run_id, state.status, failed)

    def _fire_scheduled(self, dag: DagSpec, slot: datetime) -> None:
        """The scheduler's `fire`: queue the run of `dag` for a cron `slot`. Raises
        DaemonError('duplicate_run') if that slot's run is still queued or running."""
        if self.store.write_error is not None:  # as a trigger would be refused
            log.warning("cron slot %s of %s skipped: %s", slot.isoformat(), dag.id, STORAGE_FAILED)
            return
        if self._accepting:
            self._enqueue(dag, slot_run_id(dag.id, slot), dag.bind_params(None))

    def _enqueue(
        self,
        dag: DagSpec,
        run_id: str,
        params: dict[str, str],
        recorded: bool = False,
        *,
        parent_run_id: str | None = None,
        triggered_by: str | None = None,
    ) -> str:
        self._check_accepting()
        self.admission.check_new(run_id)
        now = self.clock()
        state = RunState(
            dag,
            run_id,
            params,
            progress_interval=self.config.progress_interval,
            handler_grace=self.config.handler_grace,
            parent_run_id=parent_run_id,
            triggered_by=triggered_by,
        )
        if not recorded:
            self.store.record_run(
                run_id,
                dag.id,
                params,
                now,
                self._bind(dag),
                parent_run_id=parent_run_id,
                triggered_by=triggered_by,
            )
        state.queued_at = now
        self.publish(state.run_event(now))  # queued
        self.admission.enqueue(state)
        self._launch(dag.id)
        return run_id

    def _definition(self, dag: DagSpec) -> tuple[str, str] | None:
        """(version, JSON text) of `dag` (dagd/core/dagsnapshot.py), made once per DagSpec
        (about a fifth of its parse time: 0.1 s for 10,000 steps) and kept by DAG id. None,
        logged, if it cannot be serialized (a bug: its runs then keep no definition)."""
        known = self._versions.get(dag.id)
        if known is not None and known[0] is dag:
            return known[1]
        made: tuple[str, str] | None = None
        try:
            text = dag_to_json(dag)
            made = (dag_version(text), text)
        except Exception:
            log.exception("cannot serialize DAG %s: its runs keep no definition", dag.id)
        self._versions[dag.id] = (dag, made)
        return made

    def _bind(self, dag: DagSpec) -> str | None:
        """The version of `dag`, the definition a new run is bound to (None: none could be
        made); its JSON text is queued for the store once per version and process, not per
        run: a trigger of a loaded DAG costs two lookups."""
        made = self._definition(dag)
        if made is None:
            return None
        version, text = made
        if version not in self._stored_versions:
            self.store.record_dag_version(version, dag.id, text)
            self._stored_versions.add(version)
        return version

    def _launch(self, dag_id: str) -> None:
        """Start the queued runs of `dag_id` that its max_active_runs allows: the DAG's current
        definition's (loaded now), else, for a DAG no longer loaded, the runs' own."""
        if not self._accepting:
            return
        current = self.dags.get(dag_id)
        limit = current.max_active_runs if current is not None else None
        for state in self.admission.admit(dag_id, limit):
            driver = RunDriver(
                state,
                self._run_executors,
                self._emit,
                clock=self.clock,
                step_slots=self.step_slots,
                on_leftover=self._record_leftover,
                notifier=self.notifier,
                pools=self.pools,
            )
            self.active[state.run_id] = driver
            assert self._nursery is not None
            self._nursery.start_soon(self._drive, driver, name=f"run {state.run_id}")

    async def _drive(self, driver: RunDriver) -> None:
        state = driver.state
        closed: RunState | None = None  # the run as closed out after a crash of its driver
        log.info("run %s of %s started", state.run_id, state.dag.id)
        try:
            await driver.run()
            took = (state.ended_at or 0.0) - (state.started_at or 0.0)
            failed = sorted(
                sid for sid, st in state.steps.items() if st.status is StepStatus.FAILED
            )
            steps = [sid for sid in failed if sid not in state.dag.handlers]
            handlers = [sid for sid in failed if sid in state.dag.handlers]
            log.info(
                "run %s of %s: %s in %.1fs%s%s",
                state.run_id,
                state.dag.id,
                state.status.value,
                max(0.0, took),
                f" (failed: {', '.join(steps)})" if steps else "",
                f" (handler failed: {', '.join(handlers)})" if handlers else "",
            )
        except Exception as exc:
            # A bug in one run must not take the daemon and every other run down with it:
            # record it, close the run out as failed (every step final, as recovery does it),
            # and carry on.
            log.exception("run %s of %s crashed", state.run_id, state.dag.id)
            now, error = self.clock(), f"internal error: {exc!r}"
            if state.status.finished:
                self.publish(ErrorEvent(state.dag.id, state.run_id, None, error, now))
            else:
                events, closed = close_out_state(state, now, error)
                for event in events:
                    self.publish(event)
        finally:
            del self.active[state.run_id]
            self.admission.finished(state)
            if closed is not None:
                self.admission.remember(closed)  # in place of the half-closed state
            self._idle.set()
            self._launch(state.dag.id)

    async def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel a queued or running run; `reason` becomes the error of the steps it stops.

        A queued run is cancelled at once (its events are published before this returns). A
        running run's waiting steps are cancelled and its running steps stopped (SIGTERM, then
        SIGKILL after config.kill_grace seconds); this returns at once, and the run's final
        `cancelled` status follows as an event, once its on_cancel and always handlers ran
        (config.handler_grace seconds at most). A run whose handlers run already keeps the
        outcome they run for; they get handler_grace seconds. Cancelling a run again stops
        its handlers at once (running ones are stopped, the others never start).

        Raises DaemonError with code:
        - `unknown_run`: no run `run_id` is known, in memory or in the store;
        - `not_running`: the run has already finished.
        """
        driver = self.active.get(run_id)
        if driver is not None:
            if driver.state.cancelling:  # a second cancel: its handlers stop now
                driver.stop_handlers(f"stopped: {reason}, again")
            else:
                driver.cancel(reason)
            return
        state = self.admission.remove_queued(run_id)
        if state is not None:  # a new run or a retried one, waiting for a slot
            self._publish_all(state.cancel(self.clock(), reason))
            self.admission.remember(state)
            return
        record = await self.store.get_run(run_id)
        if record is None:
            raise DaemonError("unknown_run", f"no run {run_id!r}")
        raise DaemonError("not_running", f"run {run_id} is already {record[0].status}")

    async def retry(self, run_id: str) -> str:
        """Run a failed or cancelled run again under the same run id (returned): successful
        steps are kept, the rest run again, their attempt numbers going on from the last try.

        The run reruns the definition it was triggered with (stored with it: the same after a
        restart; docs/dags.md), not the DAG file as edited since; its DAG must still be loaded,
        whose current max_active_runs it waits for. A run recorded before dagd stored
        definitions reruns the loaded DAG. Like `trigger`, it answers once the run is stored as
        queued again; its events (queued, then running when the DAG's max_active_runs allows,
        ...) follow the answer.

        Raises DaemonError with code:
        - `not_finished`: the run is queued or running, or another retry of it is under way;
        - `unknown_run`: no run `run_id` is known;
        - `unknown_dag`: the run's DAG is no longer loaded;
        - `not_retryable`: the run succeeded;
        - `shutting_down`: the daemon is stopping;
        - `storage_unavailable`: the state file cannot be written at the moment.
        """
        return await self._requeue(run_id, every_step=False)

    async def _requeue(self, run_id: str, *, every_step: bool) -> str:
        """`retry`, and a backfill's rerun of a successful run (`every_step`: its successful
        steps run again too, their attempt numbers going on)."""
        # Reserved until queued: two retries of one run at once must not both get through the
        # awaits below.
        with self.admission.retrying(run_id):
            if every_step:
                # Rebuilt from the store's rows, which must show the run as it ended: its last
                # events may still be on their way to the disk.
                with contextlib.suppress(StorageUnavailable):  # refused just below
                    await self.store.flush()
                state = await self._restore(run_id, every_step=True)
            else:
                state = self.admission.recall(run_id) or await self._restore(run_id)
            try:
                self._dag(state.dag.id)  # still loaded: in memory or not, one rule
                if state.status not in RETRYABLE_RUN:
                    raise DaemonError(
                        "not_retryable",
                        f"run {run_id} is {state.status}; only failed or cancelled runs can be"
                        " retried",
                    )
                self._check_accepting()
                self._check_writable()
                self.store.record_requeue(run_id)
                await self._commit(run_id)
                if self.store.requeue_missed(run_id):
                    # History retention deleted the run while this retry was reading it.
                    raise DaemonError(
                        "unknown_run", f"no run {run_id!r} (history retention deleted it)"
                    )
                # The daemon may have begun to stop meanwhile: as for trigger, the record says
                # queued, and the next start closes it out.
                self._check_accepting()
            except DaemonError as exc:
                if not every_step and exc.code != "unknown_run":  # a deleted run is forgotten
                    self.admission.remember(state)
                raise
            if every_step:
                self.admission.recall(run_id)  # the rebuilt state replaces the remembered one
            # queued again (clients see it wait for a max_active_runs slot), then started
            state.queued_at = self.clock()
            self._publish_all(state.requeue(self.clock()))
            self.admission.enqueue(state)
            self._launch(state.dag.id)
            return run_id

    # ------------------------------------------------------------ DAG control

    async def pause(self, dag_id: str) -> None:
        """Stop a loaded DAG's schedule from firing until `unpause`; manual triggers and
        backfills still run. It returns once the pause is committed to the store (as a
        trigger does), so a crash right after cannot undo it; it survives restarts and edits
        of the DAG file. Clients get a `dag_status` event. Pausing a paused DAG changes
        nothing (it still waits for the pause to be committed).

        Raises DaemonError with code:
        - `unknown_dag`: no DAG `dag_id` is loaded;
        - `storage_unavailable`: the state file cannot be written: refused while writes fail
          before the call; if they fail while it waits, the pause is in effect but is stored
          only once writes succeed again (a crash before that loses it)."""
        await self._set_paused(dag_id, True)

    async def unpause(self, dag_id: str) -> float | None:
        """Let a paused DAG's schedule fire again, once that is committed to the store (as
        `pause`); returns its next slot after now (UNIX seconds; None without schedule). The
        DAG's `catchup` decides what happens to the slots missed while it was paused, as after
        downtime (dagd/daemon/scheduler.py): all of them run, oldest first, or only the latest;
        either way at once (they are not the returned slot), and a slot whose run exists
        already (a backfill made it) is passed over. Raises DaemonError('unknown_dag'),
        ('storage_unavailable'), as `pause`."""
        await self._set_paused(dag_id, False)
        return self.scheduler.next_fire(dag_id)

    async def _set_paused(self, dag_id: str, paused: bool) -> None:
        self._dag(dag_id)
        if (dag_id in self.scheduler.paused) != paused:
            self._check_writable()
            self.store.record_paused(dag_id, paused, self.clock())
            self.scheduler.set_paused(dag_id, paused)
            self._publish_status(dag_id, self.clock(), self.file_error(dag_id))
            log.info("DAG %s %s", dag_id, "paused" if paused else "unpaused")
        # Answer once it is committed, also when a concurrent call made the change and is
        # still waiting for it: "paused" must mean "still paused after a crash".
        try:
            await self.store.flush()
        except StorageUnavailable as exc:
            raise _storage_unavailable(exc.message) from None

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
        """Run `dag_id` for every schedule slot from `start` to `end` (dagd/core/backfill.py
        reads them: ISO dates or date and times, in the DAG's time zone unless they carry an
        offset; a date as `end` counts its whole day), oldest first. Slots after now are left
        out: the scheduler runs them when they are due.

        Each slot's run has the id the scheduler gives that slot, and the scheduler passes over
        a slot whose run exists when it catches up (after an unpause), so a backfilled slot and
        a scheduled one never both run, while missed slots outside the range still do. Per
        slot: no run yet -> `queued` (a new run with `params`, through the DAG's queue and
        max_active_runs like any run); a run queued or running -> `skipped`; a failed or
        cancelled run -> `retried` (as `retry`: successful steps are kept); a successful run ->
        `skipped`, or with `rerun` -> `rerun` (every step runs again under the same id, attempt
        numbers going on); a retried or rerun run keeps its own params (with `params` given,
        its slot's reason says so). The new runs are stored in one commit before any is queued. With
        `dry_run` nothing is changed and the answer says what would be done. Works on a paused
        DAG too.

        Raises DaemonError with code `unknown_dag`, `no_schedule`, `invalid_range` (bounds
        that cannot be read or lie before 1970, `end` before `start`, more than
        MAX_BACKFILL_SLOTS slots),
        `invalid_params`, `shutting_down`, `storage_unavailable`.
        """
        dag = self._dag(dag_id)
        if not dag.schedule:
            raise DaemonError(
                "no_schedule", f"DAG {dag_id} has no schedule: there are no slots to backfill"
            )
        try:
            bound = dag.bind_params(params)
        except ValueError as exc:
            raise DaemonError("invalid_params", str(exc)) from None
        now = self.clock()
        # In a worker thread: up to 1000 cron searches take up to about 0.1 s (backfill.py).
        slots = await trio.to_thread.run_sync(_range_slots, dag, start, end, now)
        if not dry_run:
            self._check_accepting()
            self._check_writable()
        planned: list[BackfillSlot] = []
        for slot in slots:
            run_id = slot_run_id(dag.id, slot)
            action, reason = await self._backfill_action(run_id, rerun)
            if params and action in (BackfillAction.RETRIED, BackfillAction.RERUN):
                # A run that exists keeps the params it was triggered with (as `retry` does):
                # said, so the given ones are not believed applied.
                reason = "its run keeps the params it was triggered with"
            planned.append(BackfillSlot(slot.timestamp(), run_id, action, reason))
        if dry_run or not planned:
            return BackfillResult(dag.id, dry_run, planned)
        new = [item.run_id for item in planned if item.action is BackfillAction.QUEUED]
        await self._record_new_runs(dag, new, bound)
        done: list[BackfillSlot] = []
        for item in planned:  # oldest first into the DAG's queue
            try:
                if item.action is BackfillAction.QUEUED:
                    self._enqueue(dag, item.run_id, bound, recorded=True)
                elif item.action is not BackfillAction.SKIPPED:
                    every_step = item.action is BackfillAction.RERUN
                    await self._requeue(item.run_id, every_step=every_step)
            except DaemonError as exc:
                if exc.code in ("shutting_down", "storage_unavailable"):
                    raise
                item = attrs.evolve(item, action=BackfillAction.SKIPPED, reason=exc.message)
            done.append(item)
        # Every slot of the range has its run now: those the scheduler has yet to reach (the
        # DAG is paused) are passed over when it catches up; earlier missed slots still run.
        last = self.scheduler.last_slots.get(dag.id)
        ahead = [item.slot for item in done if last is not None and item.slot > last]
        if ahead:
            self._ahead.setdefault(dag.id, set()).update(ahead)
        return BackfillResult(dag.id, dry_run, done)

    async def _record_new_runs(
        self, dag: DagSpec, run_ids: list[str], params: dict[str, str]
    ) -> None:
        """Store the backfill's new runs as queued, in one commit (one per run would take a
        few ms each: seconds for a long range). If writes fail first, all are withdrawn and
        DaemonError('storage_unavailable') is raised."""
        self._check_accepting()
        version, now = self._bind(dag), self.clock()
        for run_id in run_ids:
            self.store.record_run(run_id, dag.id, params, now, version)
        try:
            await self.store.flush()
        except StorageUnavailable as exc:
            withdrawn = [self.store.withdraw_run(run_id) for run_id in run_ids]
            if any(withdrawn):
                raise _storage_unavailable(exc.message) from None

    async def _backfill_action(self, run_id: str, rerun: bool) -> tuple[BackfillAction, str | None]:
        """What a backfill does with the run of one slot, from its present status."""
        live = self.admission.find(run_id)
        if live is not None:
            status: RunStatus | None = live.status
        else:
            found = await self.store.get_run(run_id)
            status = found[0].status if found is not None else None
        if status is None:
            return BackfillAction.QUEUED, None
        if not status.finished:
            return BackfillAction.SKIPPED, f"its run is already {status}"
        if status in RETRYABLE_RUN:
            return BackfillAction.RETRIED, None
        if rerun:
            return BackfillAction.RERUN, None
        return BackfillAction.SKIPPED, "its run already succeeded (rerun runs it again)"

    async def _restore(self, run_id: str, *, every_step: bool = False) -> RunState:
        """A finished run rebuilt from its records (it was not in memory), with the definition
        stored with it (else the loaded DAG). With `every_step` its successful steps are
        restored as failed, so that a requeue runs them again too (their attempt numbers kept).
        Raises DaemonError('unknown_run'), or ('unknown_dag') for a run with no stored
        definition whose DAG is not loaded."""
        found = await self.store.get_run(run_id)
        if found is None:
            raise DaemonError("unknown_run", f"no run {run_id!r}")
        record, steps = found
        bound = await self.run_definition(run_id)
        rows = {s.step_id: s.restored() for s in steps}
        status = record.status if record.status.finished else RunStatus.FAILED
        if every_step:
            status = RunStatus.FAILED
            rows = {
                sid: (StepStatus.FAILED, *row[1:]) if row[0] is StepStatus.SUCCESS else row
                for sid, row in rows.items()
            }
        state = RunState.restore(
            bound[1] if bound is not None else self._dag(record.dag_id),
            run_id,
            record.params,
            status,
            rows,
            # The outputs of the steps that stay successful: the steps rerun read them.
            outputs=None if every_step else {s.step_id: s.outputs for s in steps if s.outputs},
            progress_interval=self.config.progress_interval,
            handler_grace=self.config.handler_grace,
        )
        state.parent_run_id = record.parent_run_id
        state.triggered_by = record.triggered_by
        return state

    # --------------------------------------------------------------- queries

    async def run_definition(self, run_id: str) -> tuple[str, DagSpec] | None:
        """(version, definition) a run is bound to: the DAG definition current when it was
        triggered, as stored with it (docs/dags.md; the version is 64 hex digits, people see
        the first 12). None for an unknown run, one recorded before dagd stored definitions,
        or one whose stored definition cannot be read (logged). Read in a worker thread, and
        parsed in one unless the version is a loaded DAG's or among the PARSED_DEFINITIONS
        parsed last."""
        stored = await self.store.run_definition(run_id)
        if stored is None:
            return None
        version, text = stored
        dag = self._parsed_definition(version)
        if dag is None:
            try:
                dag = await trio.to_thread.run_sync(dag_from_json, text)
            except SnapshotError as exc:
                log.warning(
                    "run %s: its stored definition %s: %s", run_id, version[:SHORT_VERSION], exc
                )
                return None
            self._parsed[version] = dag
            while len(self._parsed) > PARSED_DEFINITIONS:
                self._parsed.popitem(last=False)
        return version, dag

    def _parsed_definition(self, version: str) -> DagSpec | None:
        """The DagSpec of definition `version` if one is at hand: parsed lately, or loaded."""
        dag = self._parsed.get(version)
        if dag is not None:
            self._parsed.move_to_end(version)
            return dag
        for loaded, made in self._versions.values():
            if made is not None and made[0] == version:
                return loaded
        return None

    async def _live_version(self, state: RunState) -> str | None:
        """The definition version of a run in memory. Its DagSpec is the one it was bound to:
        a loaded DAG's (whose version is known) or one parsed from the store (kept by
        version); else the version is read from the store, without parsing the definition."""
        known = self._versions.get(state.dag.id)
        if known is not None and known[0] is state.dag and known[1] is not None:
            return known[1][0]
        for version, dag in self._parsed.items():
            if dag is state.dag:
                return version
        stored = await self.store.run_definition(state.run_id)
        return stored[0] if stored is not None else None

    def list_dags(self) -> list[DagSummary]:
        """Every loaded DAG, sorted by id, with its next scheduled run (UNIX seconds; None
        while paused), whether it is paused, and its file error (see `file_error`)."""
        return [self._summary(dag) for dag in sorted(self.dags.values(), key=lambda d: d.id)]

    def list_pools(self) -> list[PoolUsage]:
        """Every pool of config.toml's `[pools]`, by name, as it is now: its slots, the slots
        held by running attempts, and the attempts waiting for slots (dagd/core/pools.py)."""
        return self.pools.usage()

    def broken_files(self) -> list[BrokenFile]:
        """Every DAG file that is broken or refused now, sorted by path, with its problems
        (text from the file escaped, as in error events) and the loaded DAG whose last good
        version of it runs, if any."""
        running = {dag.source: dag.id for dag in self.dags.values() if dag.source is not None}
        return [
            BrokenFile(
                path,
                running.get(path),
                [
                    FileProblem(
                        one_line(p.message),
                        None if p.step is None else one_line(p.step),
                        None if p.field is None else one_line(p.field),
                    )
                    for p in problems
                ],
            )
            for path, problems in sorted(self.folder.problems.items())
        ]

    def _summary(self, dag: DagSpec) -> DagSummary:
        return DagSummary(
            dag.id,
            dag.description,
            dag.schedule,
            self.scheduler.next_fire(dag.id),
            list(dag.steps),
            list(dag.tags),
            dict(dag.params),
            timezone=dag.timezone,
            paused=dag.id in self.scheduler.paused,
            file_error=self.file_error(dag.id),
        )

    def dag_detail(self, dag_id: str) -> DagDetail:
        """A loaded DAG as `get_dag` answers it: its summary, run settings, steps (file order,
        each with its graph level) and edges (upstream -> downstream; dagd/core/detail.py).
        Raises DaemonError('unknown_dag')."""
        dag = self._dag(dag_id)
        return dag_detail(dag, self._summary(dag))

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest `limit` runs (of `dag_id`, or of every DAG) as stored, newest queued
        first; read in a worker thread. A DAG no longer loaded still lists its runs. Raises
        DaemonError('unknown_dag') for a `dag_id` that is neither loaded nor has any run."""
        runs = await self.store.list_runs(dag_id, limit)
        if dag_id is not None and not runs and dag_id not in self.dags:
            self._dag(dag_id)  # raises unknown_dag, naming the loaded DAGs
        return runs

    async def run_detail(self, run_id: str) -> RunDetail:
        """A run as `get_run` answers it: its record, trigger kind, duration, definition
        version, and every step of its definition (the one stored with it, else the loaded
        DAG's) in file order with its latest status and every attempt the store recorded
        (dagd/core/detail.py). A run in memory (queued, running, recently finished) is
        described by its live state; steps without a record yet are pending. Reads in worker
        threads. Raises DaemonError('unknown_run')."""
        live = self.admission.find(run_id)
        found = await self.store.get_run(run_id)
        if found is None and live is None:
            raise DaemonError("unknown_run", f"no run {run_id!r}")
        attempts: dict[str, list[AttemptRecord]] = {}
        for attempt in await self.store.get_attempts(run_id):
            attempts.setdefault(attempt.step_id, []).append(attempt)
        if live is not None:
            # Its definition is its live DagSpec: nothing to read or parse.
            version = await self._live_version(live)
            record = self._live_record(live, found[0] if found is not None else None)
            return live_run_detail(live, record, attempts, version)
        assert found is not None
        bound = await self.run_definition(run_id)
        version = bound[0] if bound is not None else None
        record, rows = found
        dag = bound[1] if bound is not None else self.dags.get(record.dag_id)
        # Pure, and about 20 ms for 5,000 steps: in a worker thread too.
        return await trio.to_thread.run_sync(
            stored_run_detail, record, rows, dag, attempts, version
        )

    def _live_record(self, state: RunState, stored: RunRecord | None) -> RunRecord:
        """The record of a run in memory: its live status and times over the stored row
        (which gives `queued_at`; a run not committed yet counts as queued now)."""
        return RunRecord(
            state.dag.id,
            state.run_id,
            state.status,
            dict(state.params),
            stored.queued_at if stored is not None else self.clock(),
            state.started_at,
            state.ended_at,
            state.parent_run_id,
            state.triggered_by,
        )

    async def read_log(
        self,
        run_id: str,
        step_id: str,
        attempt: int | None = None,
        stream: str = "out",
        offset: int = 0,
        length: int = MAX_LOG_READ,
    ) -> LogSlice:
        """Up to `length` bytes (1..MAX_LOG_READ, 64 KiB) of one attempt's stdout ("out") or
        stderr ("err") log from byte `offset`, with the file's size and whether the attempt is
        over (dagd/core/logslice.py; attempt None: the latest). Reads in a worker thread.
        DaemonError codes: invalid_message, unknown_run, unknown_step, unknown_attempt,
        log_unreadable (dagd/daemon/logreader.py says when)."""
        return await self.logs.read(run_id, step_id, attempt, stream, offset, length)

    async def get_run(self, run_id: str) -> tuple[RunRecord, list[StepRecord]] | None:
        """A run's record and its steps' records as committed (steps that never started have
        none), or None for an unknown run id. Read in a worker thread."""
        return await self.store.get_run(run_id)

    def run_states(self, dag_ids: set[str] | None = None) -> list[RunState]:
        """In-memory runs of `dag_ids` (None: all): running, then queued, then the recently
        finished ones (oldest first). Live objects: read, do not change."""
        return self.admission.states(dag_ids)

    def snapshot(self, dag_ids: set[str] | None = None) -> tuple[list[DagEvent], int]:
        """The present state of every queued or running run and of each DAG's latest finished
        run (of `dag_ids`; None: all) as events without seq (first a `dag_status` for each DAG
        that is paused or whose file is broken; then per run: its status, each step's status,
        its progress), and the committed seq they are current at: replaying the log from that
        seq continues them without a gap."""
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
        # DAGs that are paused or whose file is broken: a client starting from a snapshot
        # learns it here, and from dag_status events afterwards.
        for dag_id in sorted(self.dags):
            if dag_ids is None or dag_id in dag_ids:
                paused, broken = dag_id in self.scheduler.paused, self.file_error(dag_id)
                if paused or broken:
                    events.append(DagStatusEvent(dag_id, paused, broken, now))
        for state in chosen:
            events.append(state.run_event(now))
            events.extend(state.step_event(sid, now) for sid in state.steps)
            events.append(state.progress(now))
        return events, seq


def _range_slots(dag: DagSpec, start: str, end: str, now: float) -> list[datetime]:
    """The slots of a scheduled DAG's backfill range (dagd/core/backfill.py), none after `now`
    (UNIX seconds). Raises DaemonError('invalid_range'), also for dates that overflow."""
    assert dag.schedule is not None
    try:
        first = parse_bound(start, dag.timezone, end=False)
        if first.timestamp() > now:
            raise RangeError(
                f"start {start[:60]!r} is in the future: the scheduler runs those slots"
                " when they are due"
            )
        last = min(parse_bound(end, dag.timezone, end=True), datetime.fromtimestamp(now, UTC))
        schedule = Schedule(dag.schedule, dag.timezone)
        return backfill_slots(schedule, first, last, MAX_BACKFILL_SLOTS)
    except RangeError as exc:
        raise DaemonError("invalid_range", str(exc)) from None
    except ArithmeticError:  # comparing bounds near year 9999 across time zones overflows
        raise DaemonError(
            "invalid_range", f"the range {start[:60]!r} to {end[:60]!r} is out of range"
        ) from None


def _storage_unavailable(error: str) -> DaemonError:
    return DaemonError(
        "storage_unavailable",
        f"{error}; dagd takes no new runs until it can write again (it keeps trying): try later",
    )


__all__ = ["Daemon", "DaemonError", "EventStream"]
