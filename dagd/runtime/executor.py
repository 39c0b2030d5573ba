"""Runs one attempt of one step: a process group for shell steps, a thread or a task for callables.

Why process groups: cancelling a plain child leaves its children running (`sh -c "sleep 300 &"`),
so every shell step gets its own process group and a timeout or cancel signals the whole group,
SIGTERM first and SIGKILL after `grace` seconds. When a step ends normally, anything it left
running in its group is killed too: a step owns nothing after it returns.

A shell attempt runs start to finish in one worker thread (dagd/shellrun.py: spawn, copy
output into `<step>.<attempt>.out` / `.err`, created on the first byte, reap); this module keeps
the decisions on the event loop: the timeout, cancellation and the SIGTERM/SIGKILL escalation.
A failure's message quotes the last line of stderr.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from dagd.core.model import StepSpec
from dagd.core.runstate import format_seconds
from dagd.runtime.local.procs import group_members
from dagd.runtime.local.shellthread import ShellAttempt, signal_group

if TYPE_CHECKING:
    import outcome

log = logging.getLogger("dagd.runtime.executor")


@attrs.frozen
class StepContext:
    """What a Python-callable step receives."""

    dag_id: str
    run_id: str
    step_id: str
    attempt: int
    params: Mapping[str, str]
    log_dir: Path | None = None  # the executor's log folder; None: logs are not kept

    @property
    def log_path(self) -> Path | None:
        """This attempt's stdout log (what `log()` appends to)."""
        return None if self.log_dir is None else attempt_log(self.log_dir, self, "out")

    def log(self, message: str) -> None:
        """Append a line to this attempt's log file (no-op when logs are not kept)."""
        path = self.log_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(message.rstrip("\n") + "\n")


def attempt_log(log_dir: Path, ctx: StepContext, stream: str) -> Path:
    """`<log_dir>/<dag>/<run>/<step>.<attempt>.<stream>`, stream "out" or "err"."""
    return log_dir / ctx.dag_id / ctx.run_id / f"{ctx.step_id}.{ctx.attempt}.{stream}"


@attrs.frozen
class AttemptResult:
    ok: bool
    error: str | None = None
    timed_out: bool = False
    pid: int | None = None  # the process group of a shell step, for the record


class CallableNotFound(Exception):
    pass


_resolved: dict[str, Callable[..., Any]] = {}


def resolve_callable(target: str) -> Callable[..., Any]:
    """`package.module:function` (or `module:Class.method`) -> the object, cached."""
    fn = _resolved.get(target)
    if fn is None:
        module_name, _, attr_path = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise CallableNotFound(f"cannot import module {module_name!r}: {exc}") from exc
        for part in attr_path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CallableNotFound(
                    f"module {module_name!r} has no attribute {attr_path!r}"
                ) from None
        if not callable(obj):
            raise CallableNotFound(f"{target!r} is not callable")
        fn = _resolved[target] = obj
    return fn


def step_environment(
    step: StepSpec, ctx: StepContext, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a shell step: ours, the DAG's and step's `env`, then DAGD_* values.

    Params travel only as environment variables, never pasted into the shell text.
    """
    env = dict(os.environ if base is None else base)
    env.update(step.env)
    env["DAGD_DAG_ID"] = ctx.dag_id
    env["DAGD_RUN_ID"] = ctx.run_id
    env["DAGD_STEP_ID"] = ctx.step_id
    env["DAGD_ATTEMPT"] = str(ctx.attempt)
    for name, value in ctx.params.items():
        env[f"DAGD_PARAM_{name.upper()}"] = value
    return env


def _group_alive(pgid: int) -> bool:
    """Does any live process remain in the group? Zombies do not count: where PID 1 does not
    reap orphans (some containers), a step's dead background children linger as zombies."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(group_members(pgid))


def _exit_error(returncode: int, stderr_tail: bytes) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        message = f"killed by {name}"
    else:
        message = f"exit code {returncode}"
    lines = [line.strip() for line in stderr_tail.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")[:500]
    return f"{message}: {last}" if last else message


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

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to `grace` for all of it to exit, then SIGKILL what is
        left, and wait for the thread to reap the step."""
        attempt = self.attempt
        attempt.stopping = True  # read by the thread after it sets pid: one of us signals
        if attempt.pid is not None:
            signal_group(attempt.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await self.done.wait()
            while attempt.pid is not None and _group_alive(attempt.pid):
                await trio.sleep(0.02)
        if attempt.pid is not None:
            signal_group(attempt.pid, signal.SIGKILL)
        await self.done.wait()


@attrs.define
class Executor:
    """Runs step attempts. `log_dir` is where attempt logs go (None: discard output)."""

    log_dir: Path | None = None
    grace: float = 5.0
    base_env: Mapping[str, str] | None = None
    on_spawn: Callable[[StepContext, int], None] | None = None  # records process groups
    sync_limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(32))

    def log_paths(self, ctx: StepContext) -> tuple[Path, Path] | None:
        if self.log_dir is None:
            return None
        return attempt_log(self.log_dir, ctx, "out"), attempt_log(self.log_dir, ctx, "err")

    async def run(self, step: StepSpec, ctx: StepContext) -> AttemptResult:
        """Run one attempt to its end. Cancellation stops it (killing its process group) and
        propagates; a timeout is a failed result, not an exception."""
        if step.call is not None:
            return await self._run_callable(step, ctx)
        return await self._run_command(step, ctx)

    async def _run_command(self, step: StepSpec, ctx: StepContext) -> AttemptResult:
        assert step.command is not None
        argv = (
            ["/bin/sh", "-c", step.command] if isinstance(step.command, str) else list(step.command)
        )
        on_spawn = None
        if self.on_spawn is not None:
            record, token = self.on_spawn, trio.lowlevel.current_trio_token()
            on_spawn = lambda pid: token.run_sync_soon(record, ctx, pid)  # noqa: E731
        running = _Running(
            ShellAttempt(
                argv,
                functools.partial(step_environment, step, ctx, self.base_env),
                step.cwd,
                self.log_paths(ctx),
                on_spawn,
            )
        )
        # The spawn, the wait and the copying of output all happen in one worker thread
        # (dagd/shellrun.py says why); the loop only waits for it, or stops it.
        running.start()
        try:
            if step.timeout:
                with trio.move_on_after(step.timeout) as scope:
                    await running.done.wait()
                timed_out = scope.cancelled_caught
            else:
                await running.done.wait()  # no idle cancel scope: see _run_callable
                timed_out = False
        except BaseException:
            with trio.CancelScope(shield=True):
                await running.stop(self.grace)
            raise
        if timed_out:
            with trio.CancelScope(shield=True):
                await running.stop(self.grace)
            assert step.timeout is not None
            message = f"timed out after {format_seconds(step.timeout)}"
            return AttemptResult(False, message, timed_out=True, pid=running.attempt.pid)
        assert running.outcome is not None
        try:
            returncode = running.outcome.unwrap()
        except OSError as exc:
            return AttemptResult(False, self._start_error(argv, step, exc))
        except ValueError as exc:  # e.g. a NUL byte in a param value or the command
            return AttemptResult(False, f"cannot start the command: {exc}")
        assert returncode is not None
        attempt = running.attempt
        lost = None
        if (exc := attempt.log_error) is not None:
            # The step ran: its own result stands (failing it would run it again on retry),
            # but the lost output is said loudly, here and in a failure's message.
            lost = f"output lost, cannot write {exc.filename}: {exc.strerror or exc}"
            log.warning("step %s of run %s: %s", ctx.step_id, ctx.run_id, lost)
        if returncode == 0:
            return AttemptResult(True, pid=attempt.pid)
        error = _exit_error(returncode, attempt.stderr_tail)
        return AttemptResult(False, f"{error} ({lost})" if lost else error, pid=attempt.pid)

    @staticmethod
    def _start_error(argv: list[str], step: StepSpec, exc: OSError) -> str:
        if step.cwd is not None and not os.path.isdir(step.cwd):
            return f"working directory {step.cwd!r} does not exist"
        return f"cannot start {argv[0]!r}: {exc.strerror or exc}"

    async def _run_callable(self, step: StepSpec, ctx: StepContext) -> AttemptResult:
        assert step.call is not None
        if ctx.log_dir is None and self.log_dir is not None:  # made on the first ctx.log()
            ctx = attrs.evolve(ctx, log_dir=self.log_dir)
        try:
            fn = resolve_callable(step.call)
        except CallableNotFound as exc:
            return AttemptResult(False, str(exc))
        timeout = step.timeout
        try:
            if timeout:
                with trio.move_on_after(timeout) as scope:
                    await self._call(fn, ctx)
                if scope.cancelled_caught:
                    return AttemptResult(False, f"timed out after {format_seconds(timeout)}", True)
            else:
                # No timeout, no cancel scope: an idle scope costs ~5 µs per attempt, a sixth of
                # the engine's whole per-step overhead (bench/engine_overhead.py).
                await self._call(fn, ctx)
        except (Exception, SystemExit) as exc:
            return AttemptResult(False, f"{type(exc).__name__}: {exc}")
        return AttemptResult(True)

    async def _call(self, fn: Callable[..., Any], ctx: StepContext) -> None:
        if inspect.iscoroutinefunction(fn):
            await fn(ctx)
        else:
            # A thread cannot be killed: on timeout or cancel it is abandoned and finishes on
            # its own, its result ignored. Sync steps have their own thread limiter so that
            # abandoned ones can never starve trio's default one, which process spawning uses.
            await trio.to_thread.run_sync(
                fn, ctx, abandon_on_cancel=True, limiter=self.sync_limiter
            )
