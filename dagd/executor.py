"""Runs one attempt of one step: a process group for shell steps, a thread or a task for callables.

Why process groups: cancelling a plain child leaves its children running (`sh -c "sleep 300 &"`),
so every shell step gets its own session and a timeout or cancel signals the whole group,
SIGTERM first and SIGKILL after `grace` seconds. When a step ends normally, anything it left
running in its group is killed too: a step owns nothing after it returns.

Output goes to two files per attempt, `<step>.<attempt>.out` and `<step>.<attempt>.err`, written
by the child directly (no pipe to pump); a failure's message quotes the last line of stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from dagd.core.model import StepSpec
from dagd.core.runstate import format_seconds
from dagd.procs import group_members


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
        if self.log_dir is None:
            return None
        return self.log_dir / self.dag_id / self.run_id / f"{self.step_id}.{self.attempt}.out"

    def log(self, message: str) -> None:
        """Append a line to this attempt's log file (no-op when logs are not kept)."""
        path = self.log_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(message.rstrip("\n") + "\n")


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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Does any live process remain in the group? Zombies do not count: where PID 1 does not
    reap orphans (some containers), a step's dead background children linger as zombies."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(group_members(pgid))


async def stop_process_group(proc: trio.Process, grace: float) -> None:
    """SIGTERM the group, wait up to `grace` for all of it to exit, then SIGKILL what is left."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    with trio.move_on_after(grace):
        await proc.wait()
        while _group_alive(pgid):
            await trio.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


# Append, never truncate: after a run retry the attempt numbers start again at 1, and the
# earlier try's output must survive (a marker line separates the tries).
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
_RETRY_MARKER = b"\n==> dagd: the run was retried; this attempt's output follows <==\n"


def _open_log(path: Path) -> int:
    fd = os.open(path, _LOG_FLAGS, 0o644)
    if os.fstat(fd).st_size:
        os.write(fd, _RETRY_MARKER)
    return fd


def _open_logs(paths: tuple[Path, Path]) -> tuple[int, int]:
    """Open an attempt's .out and .err files. Their folder is made only when the first open
    finds it missing: a mkdir per attempt costs as much as a file creation."""
    try:
        out_fd = _open_log(paths[0])
    except FileNotFoundError:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        out_fd = _open_log(paths[0])
    try:
        err_fd = _open_log(paths[1])
    except BaseException:
        os.close(out_fd)
        raise
    return out_fd, err_fd


class _LogFileError(Exception):
    """Creating an attempt's log files failed (the OSError is the cause)."""


def _spawn(
    argv: list[str],
    paths: tuple[Path, Path] | None,
    step: StepSpec,
    ctx: StepContext,
    base_env: Mapping[str, str] | None,
) -> subprocess.Popen[bytes]:
    """Build the environment, create the attempt's log files and start the process: all in
    the worker thread that trio would use for the fork anyway, none of it on the loop."""
    env = step_environment(step, ctx, base_env)
    if paths is None:
        out_fd = err_fd = subprocess.DEVNULL
    else:
        try:
            out_fd, err_fd = _open_logs(paths)
        except OSError as exc:
            raise _LogFileError() from exc
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            env=env,
            cwd=step.cwd,
            # Its own process group (pgid = pid), so a timeout or cancel reaches every
            # process it started. setpgid rather than setsid: the same kill semantics at a
            # little less cost per spawn (bench/shell_steps.py).
            process_group=0,
        )
    finally:
        if paths is not None:
            os.close(out_fd)
            os.close(err_fd)


def _last_line(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _exit_error(returncode: int, err_path: Path | None) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        message = f"killed by {name}"
    else:
        message = f"exit code {returncode}"
    last = _last_line(err_path)
    return f"{message}: {last}" if last else message


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
        folder = self.log_dir / ctx.dag_id / ctx.run_id
        return (
            folder / f"{ctx.step_id}.{ctx.attempt}.out",
            folder / f"{ctx.step_id}.{ctx.attempt}.err",
        )

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
        paths = self.log_paths(ctx)
        try:
            # Log files and the fork happen in one worker-thread call (trio spawns in a thread
            # anyway): creating two files can cost more than the spawn itself on a busy disk,
            # and this way it never runs on the event loop.
            popen = await trio.to_thread.run_sync(_spawn, argv, paths, step, ctx, self.base_env)
        except _LogFileError as exc:
            cause = exc.__cause__
            assert isinstance(cause, OSError)
            return AttemptResult(
                False, f"cannot create log file {cause.filename}: {cause.strerror}"
            )
        except OSError as exc:
            if step.cwd is not None and not os.path.isdir(step.cwd):
                return AttemptResult(False, f"working directory {step.cwd!r} does not exist")
            return AttemptResult(False, f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        except ValueError as exc:  # e.g. a NUL byte in a param value or the command
            return AttemptResult(False, f"cannot start the command: {exc}")
        proc = trio.Process._create(popen, None, None, None)
        if self.on_spawn is not None:
            self.on_spawn(ctx, proc.pid)
        try:
            with trio.move_on_after(step.timeout if step.timeout else float("inf")) as scope:
                await proc.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                await stop_process_group(proc, self.grace)
            raise
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await stop_process_group(proc, self.grace)
            assert step.timeout is not None
            message = f"timed out after {format_seconds(step.timeout)}"
            return AttemptResult(False, message, timed_out=True, pid=proc.pid)
        _signal_group(proc.pid, signal.SIGKILL)  # whatever the step left behind
        if proc.returncode == 0:
            return AttemptResult(True, pid=proc.pid)
        return AttemptResult(
            False, _exit_error(proc.returncode, paths[1] if paths else None), pid=proc.pid
        )

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
