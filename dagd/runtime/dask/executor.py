"""The Dask executor: runs step attempts on a Dask distributed cluster (docs/dask.md).

Each attempt is one Dask task, `worker.run_attempt`, under the key
`dagd/<run id>/<step id>/<attempt>`, submitted with `pure=False` and `retries=0` (dagd's own
retry rules decide). The task's done-callback (on Dask's callback thread) reads its result
and hands it to trio with the trio token: no thread per running step, and trio's loop never
waits on Dask.

Stopping: `Future.cancel()` alone leaves a running task's processes alive, so a timeout, a
cancel or the shutdown also calls `worker.stop_attempts` on the worker that runs the attempt
(the scheduler says which: `Client.processing`, asked before the future is cancelled), which
SIGTERMs the attempt's process group and SIGKILLs it after the grace period; an attempt the
scheduler places on no worker is stopped on every worker. Each worker gets its own
`Client.run`, in its own thread, with its own time limit: a worker that cannot be reached (hung,
frozen, or without dagd installed) is logged as an ERROR and never delays stops on the others.
Stops are batched: the attempts stopped at about the same time go out together. The worker
enforces the step's timeout as well (worker.py), should the daemon's stop not arrive.

Failures are named: a worker that dies mid-step fails the attempt with "worker lost:
<address>" (Dask's `KilledWorker`; the scheduler must not re-run dagd's tasks itself, see
`distributed.scheduler.allowed-failures` in docs/dask.md); no scheduler: "dask scheduler
unreachable: <address>"; the connection lost while the attempt runs: "dask scheduler
connection lost: <address>", and the attempt is stopped on its worker when the connection
returns.

Leftover handles: {"executor": "dask", "key": "dagd/<run>/<step>/<attempt>", "scheduler":
<address>}. Clean-up after a crash asks every worker to stop the unfinished runs' attempts
and to kill the processes on its host that carry one of their DAGD_RUN_IDs (worker.stop_runs),
as soon as the scheduler is reachable.
"""

# mypy: allow-untyped-calls
# (distributed's Client and Future methods carry no annotations)

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from concurrent.futures import CancelledError
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from distributed import Client, Future
from distributed.scheduler import KilledWorker

from dagd.core.config import DaskExecutorConfig
from dagd.core.model import StepSpec
from dagd.core.runstate import format_seconds
from dagd.core.text import printable
from dagd.runtime.dask.connection import Connection
from dagd.runtime.dask.logsink import AttemptLogs, LogSinks
from dagd.runtime.dask.plugin import LeftoverReaper
from dagd.runtime.dask.worker import (
    TOPIC,
    RemoteAttempt,
    attempt_key,
    run_attempt,
    stop_attempts,
    stop_runs,
)
from dagd.runtime.executor import AttemptResult, Leftover, LeftoverSink, StepContext

log = logging.getLogger("dagd.runtime.dask")

#: The name steps use to run on the cluster: `executor = "dask"`.
DASK_EXECUTOR = "dask"

_LATE_OUTPUT = 2.0  # seconds an ended attempt waits for output events still on their way
_STOP_LIMIT = 15.0  # seconds a stop waits for the workers beyond the grace period
_REACH_LIMIT = 5.0  # seconds one worker (or the scheduler) may take to answer, beyond the grace
_FETCH_LIMIT = 10.0  # seconds a finished attempt's result may take to fetch


class _Waiter:
    """One submitted attempt: its future's outcome, delivered to trio by the done-callback."""

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.done = trio.Event()
        self.outcome: tuple[str, Any] = ("cancelled", None)

    def deliver(self, future: Future[Any]) -> None:
        """The done-callback, on Dask's callback thread. A finished task's result is not
        fetched here: it comes as an event (worker.py); an error's exception is read here,
        off trio's loop (it may take a round trip)."""
        try:
            status = future.status
            if status == "finished":
                outcome: tuple[str, Any] = ("finished", None)
            elif status == "error":
                outcome = ("error", future.exception())
            else:
                outcome = ("cancelled", None)
        except CancelledError:
            outcome = ("cancelled", None)
        except Exception as exc:  # the exception could not be fetched
            outcome = ("error", exc)
        with contextlib.suppress(trio.RunFinishedError):  # the daemon is gone
            self.token.run_sync_soon(self._set, outcome)

    def _set(self, outcome: tuple[str, Any]) -> None:
        self.outcome = outcome
        self.done.set()


@attrs.define(eq=False)
class _Submission:
    """An attempt waiting to be submitted, then its future (or why there is none)."""

    remote: RemoteAttempt
    ready: trio.Event = attrs.field(factory=trio.Event)
    future: Future[Any] | None = None
    error: Exception | None = None


@attrs.define(eq=False)
class _Stop:
    """A request to stop one attempt on whichever worker runs it."""

    key: str
    future: Future[Any] | None
    done: trio.Event = attrs.field(factory=trio.Event)
    worker: str | None = None  # where it was found running


class DaskExecutor:
    """Runs step attempts on the Dask scheduler at `config.address`, as `StepExecutor`
    says. It works while `serve()` runs (use `open_dask_executor`).

    `log_dir`: where the attempts' logs go (None: output is dropped). `grace`: seconds between
    SIGTERM and SIGKILL when a step is stopped. `name`: the name steps use. The intervals
    (seconds) are Connection's."""

    def __init__(
        self,
        config: DaskExecutorConfig,
        *,
        log_dir: Path | None = None,
        grace: float = 5.0,
        name: str = DASK_EXECUTOR,
        reconnect_interval: float = 5.0,
        check_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.grace = grace
        self._log_dir = log_dir
        self._name = name
        self._logs = LogSinks(log_dir)
        self.connection = Connection(
            config,
            self._on_connected,
            reconnect_interval=reconnect_interval,
            check_interval=check_interval,
        )
        self._submissions: list[_Submission] = []
        self._stops: list[_Stop] = []
        self._stop_wanted = trio.Event()
        self._lost_keys: set[str] = set()  # to stop on the workers once reconnected
        self._lost_runs: set[str] = set()  # crash recovery not done yet
        self._running: dict[str, Future[Any]] = {}
        self._hurry = False

    @property
    def name(self) -> str:
        """The name steps use, `executor = "dask"` by default."""
        return self._name

    @property
    def log_dir(self) -> Path | None:
        """Where attempts' logs go; None: not kept."""
        return self._log_dir

    # --------------------------------------------------------------- lifecycle

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection and carry out stops until cancelled; then close the client.
        Reports started at once: the first connection attempt goes on in the background, and
        attempts submitted meanwhile wait for it (at most `config.connect_timeout`)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.connection.keep)
            nursery.start_soon(self._stopper)
            task_status.started()

    async def _on_connected(self, client: Client) -> None:
        client.subscribe_topic(TOPIC, self._logs.on_event)
        # The stops owed first: setting up the cluster waits on every worker, and one that
        # cannot be reached must not hold them up.
        if self._lost_keys:
            keys, self._lost_keys = self._lost_keys, set()
            for key in keys:
                self._stops.append(_Stop(key, None))
            self._stop_wanted.set()
        if self._lost_runs:
            await self._stop_runs(client)
        try:
            with trio.fail_after(_REACH_LIMIT):
                await trio.to_thread.run_sync(self._set_up_cluster, client, abandon_on_cancel=True)
        except trio.TooSlowError:
            log.error(
                "cannot register dagd's worker plugin at the dask scheduler %s: no answer in "
                "%ss (a worker that cannot be reached, or without dagd installed?)",
                self.config.address,
                _REACH_LIMIT,
            )

    def _set_up_cluster(self, client: Client) -> None:
        """In a worker thread: register the worker plugin, and say when the scheduler would
        re-run dagd's tasks after a worker death."""
        client.register_plugin(LeftoverReaper())
        allowed = client.run_on_scheduler(_allowed_failures)
        if allowed != 0:
            log.warning(
                "the dask scheduler %s re-runs a task whose worker died (allowed-failures = "
                "%s): a step may then run twice; set distributed.scheduler.allowed-failures "
                "to 0 there (docs/dask.md)",
                self.config.address,
                allowed,
            )

    # ------------------------------------------------------------------- attempts

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """Run one attempt on the cluster, as `StepExecutor.run` says. Calls `on_leftover`
        once, right after the submission, with the attempt's key."""
        client = await self.connection.usable()
        if client is None:
            return AttemptResult(False, f"dask scheduler unreachable: {self.config.address}")
        if ctx.run_id in self._lost_runs:
            # A retry of a run interrupted while the scheduler was away: what the interrupted
            # run left goes first, or its clean-up would kill this attempt's processes.
            await self._stop_runs(client)
        key = attempt_key(ctx)
        logs = self._logs.open(key, ctx)
        try:
            waiter = _Waiter()
            remote = RemoteAttempt(key, step, attrs.evolve(ctx, log_dir=None), self.grace)
            submission = self._submit(client, remote)
            with trio.CancelScope(shield=True):  # one pass of the loop: see _submit
                await submission.ready.wait()
            future = submission.future
            if future is None:  # the client closed meanwhile
                return AttemptResult(
                    False,
                    f"dask scheduler unreachable: {self.config.address} ({submission.error})",
                )
            self._running[key] = future
            try:
                if on_leftover is not None:
                    handle = {"executor": self.name, "key": key, "scheduler": self.config.address}
                    on_leftover(ctx, handle)
                future.add_done_callback(waiter.deliver)
                return await self._wait(step, key, future, waiter, logs)
            finally:
                del self._running[key]
                future.release()
        finally:
            self._logs.close(key)

    def _submit(self, client: Client, remote: RemoteAttempt) -> _Submission:
        """Queue `remote` for submission: every attempt queued in one pass of trio's loop
        goes to the scheduler in one `Client.map` (one graph update, rather than one per
        attempt: bench/dask_steps.py)."""
        submission = _Submission(remote)
        self._submissions.append(submission)
        if len(self._submissions) == 1:
            trio.lowlevel.current_trio_token().run_sync_soon(self._flush, client)
        return submission

    def _flush(self, client: Client) -> None:
        batch, self._submissions = self._submissions, []
        try:
            futures = client.map(
                run_attempt,
                [submission.remote for submission in batch],
                key=[submission.remote.key for submission in batch],
                pure=False,
                retries=0,
            )
        except Exception as exc:  # the client closed meanwhile; never into trio's loop
            for submission in batch:
                submission.error = exc
                submission.ready.set()
            return
        for submission, future in zip(batch, futures, strict=True):
            submission.future = future
            submission.ready.set()

    async def _wait(
        self, step: StepSpec, key: str, future: Future[Any], waiter: _Waiter, logs: AttemptLogs
    ) -> AttemptResult:
        try:
            if step.timeout:
                with trio.move_on_after(step.timeout) as scope:
                    await waiter.done.wait()
                timed_out = scope.cancelled_caught
            else:
                await waiter.done.wait()
                timed_out = False
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._stop(key, future)
            raise
        if timed_out:
            with trio.CancelScope(shield=True):
                worker = await self._stop(key, future)
                if worker is None and waiter.done.is_set():
                    # The worker's own timeout (the second line) ended the task first, so
                    # no worker had it to stop: its result event says where it ran.
                    with trio.move_on_after(_LATE_OUTPUT):
                        while logs.result is None:
                            await trio.sleep(0.01)
                    worker = None if logs.result is None else logs.result.get("worker")
            assert step.timeout is not None
            return AttemptResult(
                False, f"timed out after {format_seconds(step.timeout)}", True, worker
            )
        return await self._result(key, future, waiter.outcome, logs)

    async def _result(
        self, key: str, future: Future[Any], outcome: tuple[str, Any], logs: AttemptLogs
    ) -> AttemptResult:
        kind, value = outcome
        if kind == "finished":
            # The result event comes before the completion, through the same scheduler; in
            # case it does not, the task's result itself is fetched.
            with trio.move_on_after(_LATE_OUTPUT):
                while logs.result is None:
                    await trio.sleep(0.01)
            value = logs.result
            if value is None:
                value = await self._fetch_result(future)
                if value is None:
                    return AttemptResult(
                        False, f"dask scheduler connection lost: {self.config.address}"
                    )
            with trio.move_on_after(_LATE_OUTPUT):
                while logs.received < value.get("chunks", 0):
                    await trio.sleep(0.01)
            error = value.get("error")
            if logs.error is not None:
                lost = f"output lost, cannot write {logs.error.filename}: {logs.error.strerror}"
                log.warning("%s: %s", key, lost)
                error = f"{error} ({lost})" if error else None
            ok, outputs = bool(value.get("ok")), value.get("outputs")
            if ok and value.get("outputs_fetch"):
                # Too large for the result message: they come with the task's result.
                fetched = await self._fetch_result(future)
                outputs = None if fetched is None else fetched.get("outputs")
                if outputs is None:
                    ok, error = False, f"outputs lost: cannot fetch the result of {key}"
            return AttemptResult(
                ok,
                error,
                bool(value.get("timed_out")),
                value.get("worker"),
                outputs=outputs if ok else None,
            )
        if kind == "error" and isinstance(value, KilledWorker):
            address = value.last_worker.address
            return AttemptResult(False, f"worker lost: {address}", worker=address)
        if kind == "error":
            return AttemptResult(False, printable(f"on the dask cluster: {_describe(value)}"))
        # Cancelled, and not by dagd (whose stops come as timeouts or trio cancellation):
        # the client lost the scheduler and cancelled every future; the task may run on.
        self._lost_keys.add(key)
        return AttemptResult(False, f"dask scheduler connection lost: {self.config.address}")

    async def _fetch_result(self, future: Future[Any]) -> dict[str, Any] | None:
        """The finished task's result, fetched from its worker, or None if that fails or
        takes over `_FETCH_LIMIT` seconds: the connection went (the client closed, its loop
        with it) or hangs. The task has ended on its worker, so nothing is left to stop
        there; only its outcome is unknown."""
        try:
            with trio.move_on_after(_FETCH_LIMIT):
                # Abandoned when it takes too long: the thread ends with the client's
                # own timeout, or when the client closes.
                value = await trio.to_thread.run_sync(
                    lambda: future.result(timeout=_FETCH_LIMIT), abandon_on_cancel=True
                )
                if isinstance(value, dict):
                    return value
                log.warning("%s: the task's result is not dagd's: %r", future.key, value)
                return None
        except Exception as exc:  # the client closed, its loop with it; a timeout
            log.warning("cannot fetch the result of %s: %s", future.key, _describe(exc))
            return None
        log.warning("cannot fetch the result of %s in %ss", future.key, _FETCH_LIMIT)
        return None

    # -------------------------------------------------------------------- stopping

    async def _stop(self, key: str, future: Future[Any] | None) -> str | None:
        """Stop attempt `key` on the cluster; returns the address of the worker where it was
        running (None: not found running)."""
        request = _Stop(key, future)
        self._stops.append(request)
        self._stop_wanted.set()
        with trio.move_on_after(self.grace + _STOP_LIMIT):
            await request.done.wait()
        return request.worker

    async def _stopper(self) -> None:
        """Carries out the stops asked for meanwhile, one batch at a time but each batch in a
        task of its own: a batch waiting on a slow or unreachable worker never holds up the
        next (a second signal's `kill_now`, another step's cancel)."""
        async with trio.open_nursery() as nursery:
            while True:
                await self._stop_wanted.wait()
                self._stop_wanted = trio.Event()
                batch, self._stops = self._stops, []
                client = self.connection.client
                if client is None:
                    self._lost_keys.update(request.key for request in batch)
                    for request in batch:
                        request.done.set()
                else:
                    grace = 0.0 if self._hurry else self.grace
                    nursery.start_soon(self._stop_batch, client, batch, grace)

    async def _stop_batch(self, client: Client, batch: list[_Stop], grace: float) -> None:
        """Stop `batch` on the workers that run its attempts: the scheduler says which
        worker processes each key (asked before the futures are cancelled, which makes it
        forget them); a key it places nowhere (queued, or its future lost with a connection)
        goes to every worker. One `Client.run` per worker, each in its own thread and with
        its own time limit (`grace` + `_REACH_LIMIT` seconds), so a worker that cannot be
        reached delays only the stops sent to it. A request is done once its worker has
        answered, or, for a key placed nowhere, once a worker reports it found or all have
        answered."""
        try:
            with trio.fail_after(_REACH_LIMIT):
                placed = await trio.to_thread.run_sync(
                    _place_and_cancel, client, batch, abandon_on_cancel=True
                )
        except (Exception, trio.TooSlowError) as exc:  # the connection went meanwhile
            log.warning("cannot stop steps on the dask cluster (%s); will retry", exc)
            self._lost_keys.update(request.key for request in batch)
            for request in batch:
                request.done.set()
            return
        workers, where = placed
        unplaced = [request for request in batch if request.key not in where]
        targets: dict[str, list[_Stop]] = {}
        for request in batch:
            if request.key in where:
                targets.setdefault(where[request.key], []).append(request)
        for worker in workers:
            targets.setdefault(worker, []).extend(unplaced)
        pending = {request.key: 0 for request in batch}
        for requests in targets.values():
            for request in requests:
                pending[request.key] += 1

        async def stop_on(worker: str, requests: list[_Stop]) -> None:
            keys = sorted({request.key for request in requests})
            answer = await _run_on(
                client, worker, grace + _REACH_LIMIT, "stop steps", stop_attempts, keys, grace
            )
            stopped = set(answer) if isinstance(answer, list) else set()
            for request in requests:
                if request.key in stopped:
                    request.worker = worker
                    request.done.set()
                pending[request.key] -= 1
                if pending[request.key] == 0:
                    request.done.set()

        async with trio.open_nursery() as nursery:
            for worker, requests in targets.items():
                if requests:
                    nursery.start_soon(stop_on, worker, requests)
        for request in batch:
            request.done.set()

    def kill_now(self) -> None:
        """Cut short the stopping of steps (a second signal at shutdown): every running
        attempt's process group gets SIGKILL now, and later stops skip the grace period.

        The attempts are queued as a batch of stops without grace; `_stopper` sends it out
        at once, beside the stops still waiting out their grace (those end as soon as their
        groups are gone). If the connection is down now, they go out once it is back."""
        self._hurry = True
        for key in list(self._running):
            self._stops.append(_Stop(key, None))
        self._stop_wanted.set()

    # -------------------------------------------------------------- crash recovery

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """Stop what attempts of the unfinished `run_ids` still run on the cluster (each
        worker's attempts of those runs, and the processes on its host whose DAGD_RUN_ID is
        one of them), now if the scheduler is reachable, else as soon as it is. Logs what it
        stopped (WARNING)."""
        self._lost_runs.update(run_ids)
        self._lost_runs.update(leftover.run_id for leftover in leftovers)
        client = self.connection.client
        if client is not None and self._lost_runs:
            await self._stop_runs(client)

    async def _stop_runs(self, client: Client) -> None:
        """Crash recovery on every worker, each in its own thread and time limit; the runs
        are done with once every worker has answered (an unreachable one is logged)."""
        runs = sorted(self._lost_runs)
        try:
            with trio.fail_after(_REACH_LIMIT):
                workers = await trio.to_thread.run_sync(_workers, client, abandon_on_cancel=True)
        except (Exception, trio.TooSlowError) as exc:
            log.warning("cannot clean up interrupted runs on the dask cluster (%s)", exc)
            return
        found: dict[str, Any] = {}

        async def clean(worker: str) -> None:
            found[worker] = await _run_on(
                client,
                worker,
                self.grace + _REACH_LIMIT,
                "clean up interrupted runs",
                stop_runs,
                runs,
                self.grace,
            )

        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(clean, worker)
        self._lost_runs.difference_update(runs)
        for worker, stopped in sorted(found.items()):
            if isinstance(stopped, dict) and (stopped["keys"] or stopped["pids"]):
                log.warning(
                    "stopped leftovers of interrupted runs on dask worker %s: attempts %s, "
                    "processes %s",
                    worker,
                    stopped["keys"],
                    stopped["pids"],
                )


async def _run_on(client: Client, worker: str, limit: float, what: str, fn: Any, *args: Any) -> Any:
    """`fn(*args)` on `worker` alone (`Client.run`), in a thread; its answer, or None when
    it failed or took over `limit` seconds, which is logged as an ERROR naming the worker.
    A thread given up on is abandoned: it ends when the scheduler gives up on the worker."""
    try:
        with trio.fail_after(limit):
            answers = await trio.to_thread.run_sync(
                lambda: client.run(fn, *args, workers=[worker], on_error="return"),
                abandon_on_cancel=True,
            )
    except trio.TooSlowError:
        log.error("cannot %s on dask worker %s: no answer in %ss", what, worker, limit)
        return None
    except Exception as exc:  # the connection went meanwhile
        log.error("cannot %s on dask worker %s: %s", what, worker, _describe(exc))
        return None
    answer = answers.get(worker)
    if isinstance(answer, BaseException) or worker not in answers:
        error = "it left" if answer is None else _describe(answer)
        log.error("cannot %s on dask worker %s: %s", what, worker, error)
        return None
    return answer


def _workers(client: Client) -> list[str]:
    """In a worker thread: the addresses of the workers the scheduler knows now."""
    return sorted(client.processing())


def _place_and_cancel(client: Client, batch: list[_Stop]) -> tuple[list[str], dict[str, str]]:
    """In a worker thread: the workers the scheduler knows, and the worker processing each
    key of `batch` (asked first), then the futures cancelled."""
    processing = client.processing()
    keys = {request.key for request in batch}
    where = {key: worker for worker, held in processing.items() for key in held if key in keys}
    futures = [request.future for request in batch if request.future is not None]
    if futures:
        client.cancel(futures)
    return sorted(processing), where


def _allowed_failures(dask_scheduler: Any) -> Any:
    """Run on the scheduler: its `allowed-failures` setting."""
    return dask_scheduler.allowed_failures


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@asynccontextmanager
async def open_dask_executor(
    config: DaskExecutorConfig, **options: Any
) -> AsyncIterator[DaskExecutor]:
    """A `DaskExecutor(config, **options)` serving for the duration of the block; leaving
    it closes the client (attempts still running are the caller's to cancel first)."""
    executor = DaskExecutor(config, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.serve)
        try:
            yield executor
        finally:
            nursery.cancel_scope.cancel()
