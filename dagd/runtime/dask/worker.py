"""What runs on a Dask worker: one attempt of a step (`run_attempt`, the task dagd submits), the
table of the attempts running in this worker process, and stopping them (`stop_attempts`,
`stop_runs`, which the daemon calls on every worker with `Client.run`).

Why a table of our own: `Future.cancel()` only forgets a task; a running one goes on, and so
would its processes (checked with distributed 2026.8). So each attempt registers its process
group (a shell step) or its cancel function (a Python step in a trio run) under its key
while it runs, and `stop_attempts` reaches them: SIGTERM to the group, SIGKILL after the
grace period.

A shell step runs here as on the daemon's machine (dagd/runtime/local/shell.py): its own
process group, killed whole when the step ends, times out or is stopped; the environment built
by `step_environment` (DAGD_* variables, params, the step's `env`), but on top of a short list
of this worker's variables (`PASSED_ENV`) rather than all of them, so the worker's own secrets
never reach a step; its `cwd`; a failure's message with the exit code and the last line of
stderr. The step's timeout is enforced here too, from the moment the process starts: the
second line, should the daemon's stop never arrive.

Output is not written to files here: it goes back to the daemon as events on the topic `TOPIC`
(`Worker.log_event`), in chunks of at most `CHUNK_SIZE` bytes sent at least every
`FLUSH_INTERVAL` seconds while output flows, and the attempt's result follows them. Events
pass through the scheduler, which keeps the last `distributed.admin.low-level-log-length`
(1000 by default) of each topic: bounded chunks bound that memory too (16 MiB by default).

Every process of a step carries `OWNER_VAR` in its environment, naming this worker process
(pid and start time): when a worker dies, its steps' process groups live on (a SIGKILLed
worker cannot stop them), and `kill_orphaned_steps` (run by plugin.py's worker plugin on
every worker start) finds them by that variable.

This module must be importable on the workers: they install dagd too (docs/dask.md).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs
import psutil
import trio

from dagd.core.model import StepSpec
from dagd.core.outputs import OutputError, encoded_size
from dagd.core.runstate import format_seconds
from dagd.core.text import printable
from dagd.runtime.executor import StepContext
from dagd.runtime.local.environment import step_environment
from dagd.runtime.local.messages import exit_error, start_error
from dagd.runtime.local.outputfiles import OutputFiles, take_outputs
from dagd.runtime.local.pipes import copy_until_exit, drain
from dagd.runtime.local.procs import (
    group_alive,
    kill_processes_and_groups,
    process_start,
    processes_of_runs,
    signal_group,
)
from dagd.runtime.local.python import (
    CallableNotFound,
    call_sync,
    resolve_callable,
    run_callable,
)

#: The event topic that carries step output from workers to the daemon.
TOPIC = "dagd-step-output"
#: Most bytes of output in one event.
CHUNK_SIZE = 16 * 1024
#: Seconds output may wait in a worker before it is sent.
FLUSH_INTERVAL = 0.05
#: The variable naming the worker process that runs a step ("<pid>:<start ticks>").
OWNER_VAR = "DAGD_DASK_WORKER"
#: The only variables of the worker's own environment a shell step sees (plus every `LC_*`);
#: the rest of it (cloud credentials, tokens) stays the worker's.
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")

_TAIL_SIZE = 4096  # stderr kept for a failure's message
_KILL_WAIT = 2.0  # seconds stop_attempts waits for SIGKILLed groups to be gone
_REFUSED_KEEP = 3600.0  # seconds a key stopped before it started stays refused


def attempt_key(ctx: StepContext) -> str:
    """The Dask key of one attempt: `dagd/<run id>/<step id>/<attempt>` (unique per daemon:
    attempt numbers go on across a run's retries)."""
    return f"dagd/{ctx.run_id}/{ctx.step_id}/{ctx.attempt}"


def run_prefix(run_id: str) -> str:
    """The start of the keys of every attempt of run `run_id`."""
    return f"dagd/{run_id}/"


@attrs.frozen
class RemoteAttempt:
    """What the daemon sends for one attempt: its key, the step, its context (without a
    log folder: the daemon writes the logs) and the grace period in seconds between SIGTERM
    and SIGKILL."""

    key: str
    step: StepSpec
    ctx: StepContext
    grace: float


@attrs.frozen
class RemoteStepContext(StepContext):
    """The `StepContext` a Python step gets on a worker: `log()` sends the line to the
    daemon's log file of the attempt instead of writing a local file."""

    write: Callable[[str], None] = attrs.field(default=print, kw_only=True, repr=False, eq=False)

    def log(self, message: str) -> None:
        """Send `message` as one line of this attempt's stdout log."""
        self.write(message.rstrip("\n") + "\n")


@attrs.define(eq=False)
class _Entry:
    """One attempt running in this worker process (guarded by `_lock`)."""

    pgid: int | None = None  # a shell step's process group once spawned
    stopping: bool = False  # stop_attempts has it: the attempt's own kill waits
    why: str = "stopped"  # the attempt's error once stopped
    cancel: Callable[[], None] | None = None  # a Python step's cancel (its trio run's)
    outputs: Mapping[str, Any] | None = None  # what a successful attempt handed downstream


#: Where this worker's shell steps write their outputs (a private folder, made on first use).
_output_files = OutputFiles()

_lock = threading.Lock()
_running: dict[str, _Entry] = {}
_refused: dict[str, float] = {}  # key -> time.monotonic() it was stopped before it started


class _Output:
    """A step's output on its way to the daemon: buffered per stream, sent in chunks. A lock
    guards it: a sync Python step that timed out may still call `ctx.log()` from its own
    thread while the task's thread sends what is left."""

    def __init__(self, key: str, send: Callable[[dict[str, Any]], None]) -> None:
        self.key = key
        self.send = send
        self.buffers: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
        self.first_pending: float | None = None
        self.sent = 0
        self.err_tail = bytearray()
        self.lock = threading.Lock()

    def add(self, stream: str, data: bytes) -> None:
        with self.lock:
            if stream == "err":
                self.err_tail += data
                del self.err_tail[:-_TAIL_SIZE]
            buffer = self.buffers[stream]
            buffer += data
            if self.first_pending is None:
                self.first_pending = time.monotonic()
            if len(buffer) >= CHUNK_SIZE:
                self._flush()

    def write_text(self, text: str) -> None:
        self.add("out", text.encode("utf-8", "replace"))
        self.flush()

    def flush_due(self) -> float | None:
        """Send what waited `FLUSH_INTERVAL`; returns seconds until the next send is due."""
        with self.lock:
            if self.first_pending is None:
                return None
            wait = self.first_pending + FLUSH_INTERVAL - time.monotonic()
            if wait <= 0:
                self._flush()
                return None
            return wait

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        for stream, buffer in self.buffers.items():
            for start in range(0, len(buffer), CHUNK_SIZE):
                data = bytes(buffer[start : start + CHUNK_SIZE])
                self.send({"key": self.key, "stream": stream, "seq": self.sent, "data": data})
                self.sent += 1
            buffer.clear()
        self.first_pending = None


def run_attempt(attempt: RemoteAttempt) -> dict[str, Any]:
    """The task: run one attempt to its end on this worker (`perform_attempt`, its output and
    result sent as events on `TOPIC` through `Worker.log_event`)."""
    from distributed import get_worker

    worker = get_worker()
    return perform_attempt(attempt, lambda msg: worker.log_event(TOPIC, msg), worker.address)


def perform_attempt(
    attempt: RemoteAttempt, send: Callable[[dict[str, Any]], None], address: str
) -> dict[str, Any]:
    """Run one attempt to its end in this process, registered under its key for
    `stop_attempts`. Never raises for the step's own failure. Sends its output as
    {"key", "stream": "out" | "err", "seq", "data": bytes} messages through `send` (a Python
    step's traceback goes to "err", as a local one's goes to its stderr log), then
    {"key", "result": ...}. Returns that result: {"ok": bool, "error": str | None,
    "timed_out": bool, "worker": `address`, "chunks": how many output messages it sent,
    "outputs": what a successful attempt handed downstream (dagd/core/outputs.py) or None}.
    The result message leaves outputs over `CHUNK_SIZE` bytes of JSON out (it says
    "outputs_fetch": True instead): they come with the task's result, which the daemon then
    fetches, since the scheduler keeps the last messages of the topic."""
    output = _Output(attempt.key, send)
    entry = _Entry()
    with _lock:
        refused = _refused.pop(attempt.key, None) is not None
        if not refused:
            _running[attempt.key] = entry
    error: str | None
    if refused:
        ok, error, timed_out = False, "stopped before it started", False
    else:
        try:
            if attempt.step.call is not None:
                ok, error, timed_out = _run_callable(attempt, entry, output, address)
            else:
                ok, error, timed_out = _run_shell(attempt, entry, output)
        finally:
            with _lock:
                _running.pop(attempt.key, None)
            output.flush()
    outputs = entry.outputs if ok else None
    result = {
        "ok": ok,
        "error": error,
        "timed_out": timed_out,
        "worker": address,
        "chunks": output.sent,
        "outputs": outputs,
    }
    # Also sent as an event, after the output: the daemon reads it there, which spares it a
    # round trip to this worker per attempt to fetch the task's result.
    message = result
    if outputs and encoded_size(outputs) > CHUNK_SIZE:
        message = {**result, "outputs": None, "outputs_fetch": True}
    send({"key": attempt.key, "result": message})
    return result


# ----------------------------------------------------------------- shell steps


def owner_marker() -> str:
    """`OWNER_VAR`'s value for this process: "<pid>:<start ticks since boot>"."""
    pid = os.getpid()
    return f"{pid}:{process_start(pid)}"


def passed_environment() -> dict[str, str]:
    """The part of this worker's environment that a step starts from (`PASSED_ENV`, `LC_*`)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in PASSED_ENV or name.startswith("LC_")
    }


_Result = tuple[bool, "str | None", bool]  # ok, error, timed out


def _run_shell(attempt: RemoteAttempt, entry: _Entry, output: _Output) -> _Result:
    step, ctx = attempt.step, attempt.ctx
    assert step.command is not None
    argv = ["/bin/sh", "-c", step.command] if isinstance(step.command, str) else list(step.command)
    # `$NAME` in the step's `env` expands here, against what the step starts from (the
    # worker's `PASSED_ENV` and `LC_*`) and the entries before it; not against the daemon's
    # environment, as a local step's does. On purpose: values such as "$PATH" or "$HOME"
    # describe the machine the step runs on; expanding the daemon's variables would copy
    # them into tasks that every client of the scheduler can read; and the daemon's own
    # secrets must stay its own (docs/dask.md, "What a step sees on a worker").
    try:
        output_path = _output_files.next_path()
    except OSError as exc:
        return False, printable(f"cannot make a folder for outputs on the worker: {exc}"), False
    try:
        env = step_environment(step, ctx, passed_environment(), (), output_path)
    except OutputError as exc:  # two upstream outputs would be one variable
        return False, printable(f"cannot start the command: {exc}"), False
    env[OWNER_VAR] = owner_marker()
    try:
        result = _spawn_and_watch(argv, env, attempt, entry, output)
    finally:
        outputs, output_error = take_outputs(output_path)
    ok = result[0]
    if ok and output_error is not None:
        return False, printable(f"outputs of step {ctx.step_id!r}: {output_error}"), False
    if ok:
        entry.outputs = outputs
    return result


def _spawn_and_watch(
    argv: list[str], env: dict[str, str], attempt: RemoteAttempt, entry: _Entry, output: _Output
) -> _Result:
    step = attempt.step
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd=step.cwd,
                process_group=0,  # its own group: stopping it reaches all it started
            )
        except OSError as exc:
            return False, start_error(argv, step.cwd, exc, " on the worker"), False
        except ValueError as exc:  # a NUL byte in the command or a param
            return False, f"cannot start the command: {exc}", False
        finally:
            os.close(out_w)
            os.close(err_w)
        with _lock:
            entry.pgid = popen.pid
            stopped = entry.stopping
        if stopped:  # stop_attempts came while we were spawning
            signal_group(popen.pid, signal.SIGKILL)
        try:
            streams = {out_r: "out", err_r: "err"}
            timed_out = _watch(popen.pid, streams, output, step, attempt, entry)
        except BaseException:
            signal_group(popen.pid, signal.SIGKILL)  # never leave a step unwatched
            raise
        finally:
            returncode = popen.wait()
    finally:
        os.close(out_r)
        os.close(err_r)
    if timed_out:
        assert step.timeout is not None
        return False, f"timed out after {format_seconds(step.timeout)}", True
    if entry.stopping:
        return False, entry.why, False
    if returncode == 0:
        return True, None, False
    return False, exit_error(returncode, bytes(output.err_tail)), False


def _watch(
    pid: int,
    fds: dict[int, str],
    output: _Output,
    step: StepSpec,
    attempt: RemoteAttempt,
    entry: _Entry,
) -> bool:
    """Copy output until the step's first process exits (pipes.py), sending it on in time
    and enforcing the step's timeout; then kill what it left (unless stop_attempts is
    stopping it) and drain. True if it timed out."""
    deadline = time.monotonic() + step.timeout if step.timeout else None
    kill_at: float | None = None
    timed_out = False

    def tick() -> float | None:
        nonlocal deadline, kill_at, timed_out
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            deadline = None
            timed_out = True
            with _lock:
                entry.stopping = True
            graced = attempt.grace > 0
            signal_group(pid, signal.SIGTERM if graced else signal.SIGKILL)
            kill_at = now + attempt.grace if graced else None
        if kill_at is not None and now >= kill_at:
            signal_group(pid, signal.SIGKILL)
            kill_at = None
        waits = [t - now for t in (deadline, kill_at) if t is not None]
        if (flush := output.flush_due()) is not None:
            waits.append(flush)
        return min(waits) if waits else None

    sinks = {fd: functools.partial(output.add, stream) for fd, stream in fds.items()}
    left_open = copy_until_exit(pid, sinks, tick)
    if timed_out and kill_at is not None:
        # The leader is gone; what else is in its group gets the rest of the grace.
        while time.monotonic() < kill_at and group_alive(pid):
            time.sleep(0.02)
        signal_group(pid, signal.SIGKILL)
    elif not entry.stopping:
        signal_group(pid, signal.SIGKILL)  # whatever the step left behind
    for fd in left_open:
        drain(fd, sinks[fd])
    return timed_out


# ------------------------------------------------------------- Python steps


def _run_callable(attempt: RemoteAttempt, entry: _Entry, output: _Output, address: str) -> _Result:
    step, ctx = attempt.step, attempt.ctx
    assert step.call is not None
    remote_ctx = RemoteStepContext(
        ctx.dag_id,
        ctx.run_id,
        ctx.step_id,
        ctx.attempt,
        ctx.params,
        outcome=ctx.outcome,  # a handler's
        outputs=ctx.outputs,
        write=output.write_text,
    )
    try:
        fn = resolve_callable(step.call)
    except CallableNotFound as exc:
        # Said as a local step's is, plus where: the module or name is missing on this
        # worker, which the daemon's machine may well have.
        output.add("err", f"dagd: cannot call {step.call!r}: {exc}\n".encode(errors="replace"))
        return False, printable(f"on dask worker {address}: {exc}"), False
    if not step.timeout and not inspect.iscoroutinefunction(fn):
        # A plain function without a timeout runs right here: a trio run and a thread
        # hand-off per attempt would cost a third of the rate of Python steps
        # (bench/dask_steps.py). Like any sync step, it cannot be stopped.
        result, trace = call_sync(fn, remote_ctx)
        if trace is not None:
            output.add("err", trace.encode("utf-8", "backslashreplace"))
        entry.outputs = result.outputs
        return result.ok, result.error, result.timed_out
    # Otherwise the step gets a trio loop of its own, in this thread (Dask's worker loop is
    # asyncio), and runs as on the daemon's machine (python.py's run_callable: its timeout,
    # a sync callable in a thread abandoned on timeout or stop, the traceback of a failure).
    return trio.run(_call, attempt, entry, output, remote_ctx)


async def _call(
    attempt: RemoteAttempt, entry: _Entry, output: _Output, remote_ctx: RemoteStepContext
) -> _Result:
    step = attempt.step
    assert step.call is not None

    async def log_failure(_: StepContext, text: str) -> None:
        output.add("err", text.encode("utf-8", "backslashreplace"))

    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:

        def cancel() -> None:  # from the worker's loop thread (stop_attempts)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)

        with _lock:
            entry.cancel = cancel
            if entry.stopping:
                scope.cancel()
        # One thread at most: this attempt's own sync callable (a fresh limiter per trio.run,
        # since trio's objects belong to one run).
        result = await run_callable(
            step.call, step.timeout or None, remote_ctx, trio.CapacityLimiter(1), log_failure
        )
    if scope.cancelled_caught:
        return False, entry.why, False
    entry.outputs = result.outputs
    return result.ok, result.error, result.timed_out


# ------------------------------------------------- stopping (through Client.run)


async def stop_attempts(keys: Collection[str], grace: float) -> list[str]:
    """Stop the attempts `keys` that run in this worker process: SIGTERM to a shell step's
    process group (SIGKILL when `grace` is 0), SIGKILL `grace` seconds later to what is left;
    an async Python step is cancelled (a sync one cannot be stopped: it runs on, its result
    unused). A key not running here is refused if it starts later (for
    an hour). Returns the keys found here, once their groups are gone. Runs on the worker's
    event loop."""
    import asyncio

    found: list[str] = []
    groups: list[int] = []
    now = time.monotonic()
    with _lock:
        for key, when in list(_refused.items()):
            if now - when > _REFUSED_KEEP:
                del _refused[key]
        for key in keys:
            entry = _running.get(key)
            if entry is None:
                _refused[key] = now
                continue
            found.append(key)
            entry.stopping = True
            if entry.pgid is not None:
                groups.append(entry.pgid)
            if entry.cancel is not None:
                entry.cancel()
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    end = time.monotonic() + grace
    while groups and time.monotonic() < end:
        groups = [pgid for pgid in groups if group_alive(pgid)]
        if groups:
            await asyncio.sleep(0.02)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    end = time.monotonic() + _KILL_WAIT
    while groups and time.monotonic() < end:  # SIGKILL takes effect, but not at once
        groups = [pgid for pgid in groups if group_alive(pgid)]
        if groups:
            await asyncio.sleep(0.01)
    return found


def kill_all_attempts(why: str) -> list[str]:
    """SIGKILL the process group of every attempt running in this worker process, and cancel
    its Python steps (the worker is closing: a task thread left running would keep
    the process alive, and its step with it); their error is `why`. Returns their keys."""
    with _lock:
        entries = list(_running.items())
        for _, entry in entries:
            entry.stopping = True
            entry.why = why
    for _, entry in entries:
        if entry.pgid is not None:
            signal_group(entry.pgid, signal.SIGKILL)
        if entry.cancel is not None:
            entry.cancel()
    return [key for key, _ in entries]


async def stop_runs(run_ids: Collection[str], grace: float) -> dict[str, list[Any]]:
    """Crash recovery: stop every attempt of `run_ids` running in this worker process, then
    SIGKILL any process on this host whose environment names one of `run_ids` as
    DAGD_RUN_ID (a step whose worker died, or that left its group). Returns {"keys": the
    attempts stopped, "pids": the processes killed}."""
    prefixes = tuple(run_prefix(run_id) for run_id in run_ids)
    with _lock:
        keys = [key for key in _running if key.startswith(prefixes)]
    stopped = await stop_attempts(keys, grace) if keys else []
    strays = sorted(processes_of_runs(set(run_ids)))
    kill_processes_and_groups(strays)
    return {"keys": stopped, "pids": strays}


def kill_orphaned_steps() -> list[int]:
    """SIGKILL (with their process groups) the processes on this host that a dagd step on a
    worker process that no longer exists started: those whose `OWNER_VAR` names a pid that is
    gone or was reused (another start time). Returns their pids. Blocking: walks /proc."""
    orphans = []
    for proc in psutil.process_iter():
        try:
            owner = proc.environ().get(OWNER_VAR)
        except psutil.Error:  # another user's, gone, a zombie
            continue
        if owner is None:
            continue
        pid, _, start = owner.partition(":")
        try:
            alive = process_start(int(pid)) == int(start)
        except ValueError:  # not a marker dagd wrote
            continue
        if not alive:
            orphans.append(proc.pid)
    kill_processes_and_groups(orphans)
    return orphans
