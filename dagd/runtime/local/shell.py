"""The event loop's side of one shell attempt: the timeout, cancellation, and the SIGTERM ->
grace -> SIGKILL escalation.

Why process groups: cancelling a plain child leaves its children running (`sh -c "sleep 300
&"`), so every shell step gets its own process group, and a timeout or cancel signals the whole
group, SIGTERM first and SIGKILL after `grace` seconds. When a step ends normally, anything it
left running in its group is killed too: a step owns nothing after it returns.

The attempt itself runs start to finish in one worker thread (shellthread.py: spawn, copy
output into the log files, reap); the loop only waits for that thread, or stops it. A failure's
message quotes the last line of stderr.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from dagd.core.model import StepSpec
from dagd.core.outputs import OutputError
from dagd.core.runstate import format_seconds
from dagd.core.text import printable
from dagd.runtime.executor import AttemptResult, CheckResult, LeftoverSink, StepContext
from dagd.runtime.local.environment import step_environment
from dagd.runtime.local.leftovers import leftover_handle
from dagd.runtime.local.messages import exit_error, start_error
from dagd.runtime.local.procs import become_subreaper, contain, group_alive, signal_group
from dagd.runtime.local.shellthread import ShellAttempt
from dagd.runtime.logfiles import attempt_log

if TYPE_CHECKING:
    from collections.abc import Callable

    import outcome

log = logging.getLogger("dagd.runtime.local")


class _Running:
    """The event loop's side of a ShellAttempt running in its worker thread."""

    __slots__ = ("attempt", "done", "outcome")

    def __init__(self, attempt: ShellAttempt) -> None:
        self.attempt = attempt
        self.done = trio.Event()
        self.outcome: outcome.Outcome[int | None] | None = None

    def start(self) -> None:
        token = trio.lowlevel.current_trio_token()

        def finished(result: outcome.Outcome[int | None]) -> None:
            self.outcome = result
            self.done.set()

        trio.lowlevel.start_thread_soon(
            self.attempt.run,
            lambda result: token.run_sync_soon(finished, result),
            name="dagd shell step",
        )

    async def stop(self, grace: float, hurry: Hurry) -> None:
        """SIGTERM the group, wait up to `grace` seconds for all of it to exit (none once
        `hurry` is set), then SIGKILL what is left, wait for the thread to reap the step, and
        kill what escaped the group (procs.contain)."""
        attempt = self.attempt
        attempt.stopping = True  # read by the thread after it sets pid: one of us signals
        if hurry.set:
            grace = 0.0
        if attempt.pid is not None:
            signal_group(attempt.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        with trio.move_on_after(grace):
            await self.done.wait()
            while attempt.pid is not None and group_alive(attempt.pid):
                await trio.sleep(0.02)
        if attempt.pid is not None:
            signal_group(attempt.pid, signal.SIGKILL)
        await self.done.wait()
        if attempt.pid is not None and attempt.ident is not None:
            await trio.to_thread.run_sync(contain, attempt.pid, attempt.ident)


#: A successful attempt without outputs: shared, as results are frozen.
_OK = AttemptResult(True)


@attrs.define(eq=False)
class Hurry:
    """The shell attempts one executor has running, and whether stopping them should skip
    the grace period (`kill_all`: a second signal at shutdown)."""

    running: set[ShellAttempt] = attrs.field(factory=set)
    set: bool = False

    def kill_all(self) -> None:
        """SIGKILL every running attempt's process group now; attempts stopped from now on
        get no grace period. What escaped a group is killed as each attempt ends."""
        self.set = True
        for attempt in list(self.running):
            attempt.hurried = True  # one still spawning is killed by its thread (_started)
            if attempt.pid is not None:
                signal_group(attempt.pid, signal.SIGKILL)


async def run_shell(
    step: StepSpec,
    ctx: StepContext,
    *,
    log_dir: Path | None,
    grace: float,
    base_env: Mapping[str, str] | None,
    hidden: Collection[str],
    executor: str,
    on_leftover: LeftoverSink | None,
    hurry: Hurry,
    subreaper: bool,
    output_path: str | None = None,
) -> AttemptResult:
    """Run one attempt of the shell step `step` (its `command`: a string for `/bin/sh -c`, or
    an argv tuple run without a shell) to its end. Output goes to the attempt's log files
    under `log_dir` (dagd/runtime/logfiles.py; None: discarded). `grace`: seconds between
    SIGTERM and SIGKILL. `base_env`: see environment.py. `on_leftover` gets the process
    group's handle (leftovers.py, naming `executor`) right after the spawn. `hurry`: the
    executor's registry of running attempts (`Hurry.kill_all` skips the grace period).
    `subreaper`: make this process a child subreaper first (once per process), so processes
    that leave the step's group come back to it and are killed when the attempt ends.
    `output_path`: the file the step may write its outputs to ($DAGD_OUTPUT; it need not
    exist), read and removed when the step ended: a successful attempt's result carries them,
    and outputs that cannot be taken (dagd/core/outputs.py) fail it.

    Whatever the attempt started is killed when it ends, however it ends: its process group,
    and the processes that left the group (dagd is their subreaper; procs.contain).

    Returns a failed result for a non-zero exit, a signal, a timeout, or a command that
    cannot start (missing executable or working directory, a NUL byte in the command or a
    param). On cancellation the group is stopped (SIGTERM, then SIGKILL after `grace`)
    before `trio.Cancelled` propagates."""
    assert step.command is not None
    argv = ["/bin/sh", "-c", step.command] if isinstance(step.command, str) else list(step.command)
    spawned: Callable[[int], None] | None = None
    if on_leftover is not None:
        token = trio.lowlevel.current_trio_token()

        def report(pid: int) -> None:  # in the worker thread: reads /proc off the loop
            token.run_sync_soon(on_leftover, ctx, leftover_handle(executor, pid))

        spawned = report

    log_paths = None
    if log_dir is not None:
        ids = (ctx.dag_id, ctx.run_id, ctx.step_id, ctx.attempt)
        log_paths = (attempt_log(log_dir, *ids, "out"), attempt_log(log_dir, *ids, "err"))
    if subreaper:
        become_subreaper()  # once per process: a step's escaped processes come back to dagd
    shell_attempt = ShellAttempt(
        argv,
        partial(step_environment, step, ctx, base_env, hidden, output_path),
        step.cwd,
        log_paths,
        spawned,
        ident=(ctx.run_id, ctx.step_id, str(ctx.attempt)),
        output_path=output_path,
    )
    running = _Running(shell_attempt)
    hurry.running.add(shell_attempt)
    # The spawn, the wait and the copying of output all happen in one worker thread
    # (shellthread.py says why); the loop only waits for it, or stops it.
    running.start()
    try:
        return await _wait(running, step, argv, ctx, grace, hurry)
    finally:
        hurry.running.discard(shell_attempt)


async def _wait(
    running: _Running,
    step: StepSpec,
    argv: list[str],
    ctx: StepContext,
    grace: float,
    hurry: Hurry,
) -> AttemptResult:
    try:
        if step.timeout:
            with trio.move_on_after(step.timeout) as scope:
                await running.done.wait()
            timed_out = scope.cancelled_caught
        else:
            await running.done.wait()  # no idle cancel scope: see python.py
            timed_out = False
    except BaseException:
        with trio.CancelScope(shield=True):
            await running.stop(grace, hurry)
        raise
    if timed_out:
        with trio.CancelScope(shield=True):
            await running.stop(grace, hurry)
        assert step.timeout is not None
        return AttemptResult(False, f"timed out after {format_seconds(step.timeout)}", True)
    assert running.outcome is not None
    try:
        returncode = running.outcome.unwrap()
    except OSError as exc:
        return AttemptResult(False, start_error(argv, step.cwd, exc))
    except OutputError as exc:  # two upstream outputs would be one variable
        return AttemptResult(False, printable(f"cannot start the command: {exc}"))
    except ValueError as exc:  # e.g. a NUL byte in a param value or the command
        return AttemptResult(False, f"cannot start the command: {exc}")
    assert returncode is not None
    attempt = running.attempt
    lost = None
    if (unwritten := attempt.log_error) is not None:
        # The step ran: its own result stands (failing it would run it again on retry), but
        # the lost output is said loudly, here and in a failure's message.
        paths = attempt.log_paths
        first = paths[0] if paths else None
        where = unwritten.filename or (first.parent if first else "the step's log")
        lost = f"output lost, cannot write {where}: {unwritten.strerror or unwritten}"
        log.warning("step %s of run %s: %s", ctx.step_id, ctx.run_id, lost)
    if returncode == 0:
        if attempt.output_error is not None:
            message = f"outputs of step {ctx.step_id!r}: {attempt.output_error}"
            return AttemptResult(False, printable(message))
        return AttemptResult(True, outputs=attempt.outputs) if attempt.outputs else _OK
    error = exit_error(returncode, attempt.stderr_tail)
    return AttemptResult(False, f"{error} ({lost})" if lost else error)


async def run_check(
    command: str | tuple[str, ...],
    step: StepSpec,
    ctx: StepContext,
    *,
    grace: float,
    base_env: Mapping[str, str] | None,
    hidden: Collection[str],
    hurry: Hurry,
    subreaper: bool,
) -> CheckResult:
    """Run a step's precondition or one poll of its wait_for: `command` (a string for
    `/bin/sh -c`, or an argv) with the step's environment (without DAGD_OUTPUT) in its `cwd`,
    its output discarded but for the tail of stderr, which the result's message quotes. Like
    a step, it runs in a process group of its own, killed whole when it ends; cancellation
    stops it (SIGTERM, then SIGKILL after `grace`) before `trio.Cancelled` propagates."""
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    if subreaper:
        become_subreaper()
    check = ShellAttempt(
        argv,
        partial(step_environment, step, ctx, base_env, hidden, None),
        step.cwd,
        (None, None),
        ident=(ctx.run_id, ctx.step_id, str(ctx.attempt)),
    )
    running = _Running(check)
    hurry.running.add(check)
    running.start()
    try:
        try:
            await running.done.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                await running.stop(grace, hurry)
            raise
    finally:
        hurry.running.discard(check)
    assert running.outcome is not None
    try:
        returncode = running.outcome.unwrap()
    except OSError as exc:
        return CheckResult(False, f"could not start: {start_error(argv, step.cwd, exc)}", False)
    except ValueError as exc:  # a NUL byte in a param value; two outputs as one variable
        return CheckResult(False, printable(f"could not start: {exc}"), False)
    assert returncode is not None
    if returncode == 0:
        return CheckResult(True, "exited 0")
    message = exit_error(returncode, check.stderr_tail)
    if returncode < 0:  # "killed by SIGTERM"
        return CheckResult(False, "was " + message)
    return CheckResult(False, "exited " + message.removeprefix("exit code "))
