"""Python-callable steps (`call = "package.module:function"`), run in dagd's own process.

An `async def` step runs as a trio task on the event loop; a plain function runs in a worker
thread. A thread cannot be stopped: on timeout or cancel it is abandoned, finishes on its own
and its result is ignored. Sync steps get their own thread limiter, so abandoned ones can never
starve trio's default one (which spawning shell steps needs).

A callable leaves nothing behind that outlives dagd's process, so these attempts give no
leftover handle.

When logs are kept, a failed attempt's traceback (or why its callable could not be found) goes
to the attempt's stderr log file, where `dagd logs` finds it; an attempt that succeeds touches
no file unless the step itself logs.

A Dask worker runs Python steps through `run_callable` too (dagd/runtime/dask/worker.py, under
a `trio.run` of its own), with a `log_failure` that sends the traceback to the daemon's log.
"""

from __future__ import annotations

import inspect
import logging
import pkgutil
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from dagd.core.outputs import OutputError, check_returned
from dagd.core.runstate import format_seconds
from dagd.core.text import printable
from dagd.runtime.executor import AttemptResult, StepContext
from dagd.runtime.logfiles import attempt_log


class CallableNotFound(Exception):
    """A step's `call` names nothing callable; the message says what is wrong, for people."""


log = logging.getLogger("dagd.runtime.local.python")

_resolved: dict[str, Callable[..., Any]] = {}


def resolve_callable(target: str) -> Callable[..., Any]:
    """`package.module:function` (or `module:Class.method`) -> the object, imported once and
    cached by `target`. Raises `CallableNotFound` when the module cannot be imported (any
    error while importing it), an attribute is missing, or the object is not callable."""
    fn = _resolved.get(target)
    if fn is None:
        module_name = target.partition(":")[0]
        try:
            obj = pkgutil.resolve_name(target)
        except AttributeError as exc:  # Python's message names the object that lacks it
            raise CallableNotFound(str(exc)) from None
        except Exception as exc:  # also "invalid format" for a target without a module name
            raise CallableNotFound(f"cannot import module {module_name!r}: {exc}") from exc
        if not callable(obj):
            raise CallableNotFound(f"{target!r} is not callable")
        fn = _resolved[target] = obj
    return fn


#: Where a failed attempt's traceback goes: called with the attempt's context and the text.
FailureLog = Callable[[StepContext, str], Awaitable[None]]


async def run_callable(
    target: str,
    timeout: float | None,
    ctx: StepContext,
    limiter: trio.CapacityLimiter,
    log_failure: FailureLog | None = None,
) -> AttemptResult:
    """Call the step function `target` with `ctx`; a sync one in a worker thread under
    `limiter`. `timeout` in seconds (None or 0: none). What it returns is its outputs: None,
    or a mapping (dagd/core/outputs.py; anything else fails the attempt, naming the step and
    the key). An exception the step raises
    (`SystemExit` included) fails the attempt with "<ExceptionType>: <message>"
    (control characters escaped); cancellation propagates (an abandoned thread runs on).
    The traceback of that exception, from the step's own code on, or why `target` names
    nothing callable, goes to `log_failure`; by default it is appended to the attempt's
    stderr log file when `ctx.log_dir` is set (dagd/runtime/logfiles.py)."""
    report = _log_failure if log_failure is None else log_failure
    try:
        fn = resolve_callable(target)
    except CallableNotFound as exc:
        await report(ctx, f"dagd: cannot call {target!r}: {exc}\n")
        return AttemptResult(False, printable(str(exc)))
    returned: Any = None
    try:
        if timeout:
            with trio.move_on_after(timeout) as scope:
                returned = await _call(fn, ctx, limiter)
            if scope.cancelled_caught:
                return AttemptResult(False, f"timed out after {format_seconds(timeout)}", True)
        else:
            # No timeout, no cancel scope: an idle scope costs ~5 µs per attempt, a sixth of
            # the engine's whole per-step overhead (bench/engine_overhead.py).
            returned = await _call(fn, ctx, limiter)
    except (Exception, SystemExit) as exc:
        await report(ctx, _traceback_text(exc))
        return AttemptResult(False, _failure_message(exc))
    if returned is None:
        return _OK
    return returned_outputs(returned, ctx)


#: The result of a step that returned None: shared, as results are frozen.
_OK = AttemptResult(True)


def returned_outputs(returned: object, ctx: StepContext) -> AttemptResult:
    """The result of a Python step that returned `returned`: success with its outputs (a
    mapping, dagd/core/outputs.py), or a failure that names the step and says what is wrong
    with them."""
    try:
        outputs = check_returned(returned)
    except OutputError as exc:
        return AttemptResult(False, printable(f"outputs of step {ctx.step_id!r}: {exc}"))
    return AttemptResult(True, outputs=outputs)


def call_sync(fn: Callable[..., Any], ctx: StepContext) -> tuple[AttemptResult, str | None]:
    """Call the plain step function `fn` with `ctx` in this thread, without a timeout (a Dask
    worker's fast path: no thread hand-off, no event loop). Returns the attempt's result as
    `run_callable` would give it and, for a failure, the traceback text that `run_callable`
    would log (None on success)."""
    try:
        returned = fn(ctx)
    except (Exception, SystemExit) as exc:
        return AttemptResult(False, _failure_message(exc)), _traceback_text(exc)
    return (_OK if returned is None else returned_outputs(returned, ctx)), None


def _failure_message(exc: BaseException) -> str:
    """A failed Python step's error: "<ExceptionType>: <message>", control characters escaped
    (the text goes to clients, terminals and SQLite)."""
    return printable(f"{type(exc).__name__}: {_text(exc)}")


#: Modules whose frames lead up to a step's own code: dagd's call machinery, and trio's
#: (and outcome's) hand-over to and from a worker thread.
_CALLER_MODULES = ("dagd.runtime.local.python", "trio", "outcome")


def _traceback_text(exc: BaseException) -> str:
    """The traceback Python would print for `exc`, starting at the step's own code: the
    leading frames of `_CALLER_MODULES` are left out (chained exceptions are kept whole)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and _is_caller_frame(tb):
        tb = tb.tb_next
    try:
        lines = traceback.TracebackException(type(exc), exc, tb).format()
        return "".join(lines)
    except Exception:  # a broken __str__ or __repr__ in the step's exception
        return f"{type(exc).__name__}: {_text(exc)}\n"


def _is_caller_frame(tb: TracebackType) -> bool:
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and any(
        module == name or module.startswith(name + ".") for name in _CALLER_MODULES
    )


async def _log_failure(ctx: StepContext, text: str) -> None:
    """Append `text` to the attempt's stderr log when logs are kept. In a worker thread, so
    a slow disk never stalls the event loop; a file that cannot be written is logged as a
    warning and left out, since the attempt's error message still says what failed."""
    if ctx.log_dir is None:
        return
    path = attempt_log(ctx.log_dir, ctx.dag_id, ctx.run_id, ctx.step_id, ctx.attempt, "err")
    await trio.to_thread.run_sync(_append, path, text)


def _append(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
    except OSError as exc:
        log.warning("cannot write the traceback of a failed step to %s: %s", path, exc)


def _text(exc: BaseException) -> str:
    """`str(exc)`, or what can be said when that itself fails (a broken `__str__`)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


async def _call(fn: Callable[..., Any], ctx: StepContext, limiter: trio.CapacityLimiter) -> Any:
    """What the step function returned."""
    if inspect.iscoroutinefunction(fn):
        return await fn(ctx)
    return await trio.to_thread.run_sync(fn, ctx, abandon_on_cancel=True, limiter=limiter)
