"""A step's `precondition` and `wait_for`: what an attempt does before its own command.

Before each attempt of a step that has them (docs/dags.md, "Preconditions and waiting"): the
precondition runs once, and a non-zero exit skips the step; then the wait_for command is polled
every `interval` seconds until it exits 0, and fails the attempt after `timeout` seconds. Both
run on the daemon's machine through a `Checker` (the local executor), whatever executor runs
the step. No process is held between polls: each poll is a process that ends before the
interval's sleep, and a cancel (of the run, or of dagd) stops the poll that runs, or the
sleep, at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from dagd.core.model import WaitFor
from dagd.core.spec import format_duration
from dagd.runtime.executor import CheckResult

#: The shortest pause between two polls, in seconds, whatever a DAG file says: a poll is a
#: process spawned, and a shorter pause would only spin.
MIN_POLL_INTERVAL = 0.1


def precondition_reason(result: CheckResult) -> str:
    """Why a step was skipped: "precondition exited 1: <last line of stderr>"."""
    return f"precondition {result.message}"


async def poll_until(check: Callable[[], Awaitable[CheckResult]], wait_for: WaitFor) -> str | None:
    """Call `check` until it says ok, `wait_for.interval` seconds (at least MIN_POLL_INTERVAL)
    after each poll that did not; None once one did. After `wait_for.timeout` seconds (the
    poll then running is stopped) it returns the attempt's error: "wait_for timed out after
    2h: the last poll exited 1: <last line of stderr>"; a command that cannot be started is
    an error at once: "wait_for could not start: ..."."""
    last: CheckResult | None = None
    interval = max(wait_for.interval, MIN_POLL_INTERVAL)
    with trio.move_on_after(wait_for.timeout):
        while True:
            last = await check()
            if last.ok:
                return None
            if not last.started:
                return f"wait_for {last.message}"
            await trio.sleep(interval)
    what = "no poll ended" if last is None else f"the last poll {last.message}"
    return f"wait_for timed out after {format_duration(wait_for.timeout)}: {what}"
