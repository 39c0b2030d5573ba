"""Python-callable steps (`call = "package.module:function"`), run in dagd's own process.

An `async def` step runs as a trio task on the event loop; a plain function runs in a worker
thread. A thread cannot be stopped: on timeout or cancel it is abandoned, finishes on its own
and its result is ignored. Sync steps get their own thread limiter, so abandoned ones can never
starve trio's default one (which spawning shell steps needs).

A callable leaves nothing behind that outlives dagd's process, so these attempts give no
leftover handle.
"""

from __future__ import annotations

import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import trio

from dagd.core.runstate import format_seconds
from dagd.core.text import printable
from dagd.runtime.executor import AttemptResult, StepContext


class CallableNotFound(Exception):
    """A step's `call` names nothing callable; the message says what is wrong, for people."""


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


async def run_callable(
    target: str, timeout: float | None, ctx: StepContext, limiter: trio.CapacityLimiter
) -> AttemptResult:
    """Call the step function `target` with `ctx`; a sync one in a worker thread under
    `limiter`. `timeout` in seconds (None or 0: none). An exception the step raises
    (`SystemExit` included) fails the attempt with "<ExceptionType>: <message>"; cancellation
    propagates (an abandoned thread runs on)."""
    try:
        fn = resolve_callable(target)
    except CallableNotFound as exc:
        return AttemptResult(False, printable(str(exc)))
    try:
        if timeout:
            with trio.move_on_after(timeout) as scope:
                await _call(fn, ctx, limiter)
            if scope.cancelled_caught:
                return AttemptResult(False, f"timed out after {format_seconds(timeout)}", True)
        else:
            # No timeout, no cancel scope: an idle scope costs ~5 µs per attempt, a sixth of
            # the engine's whole per-step overhead (bench/engine_overhead.py).
            await _call(fn, ctx, limiter)
    except (Exception, SystemExit) as exc:
        # Escaped control characters: the text goes to clients, terminals and SQLite.
        return AttemptResult(False, printable(f"{type(exc).__name__}: {_text(exc)}"))
    return AttemptResult(True)


def _text(exc: BaseException) -> str:
    """`str(exc)`, or what can be said when that itself fails (a broken `__str__`)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


async def _call(fn: Callable[..., Any], ctx: StepContext, limiter: trio.CapacityLimiter) -> None:
    if inspect.iscoroutinefunction(fn):
        await fn(ctx)
    else:
        await trio.to_thread.run_sync(fn, ctx, abandon_on_cancel=True, limiter=limiter)
