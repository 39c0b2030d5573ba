"""Python-callable steps used by the executor and engine tests (`stepfuncs:<name>`).

`tests/conftest.py` puts this directory on sys.path, so the step targets are `stepfuncs:...`.
Shared counters are keyed by a string (a run id or a `group` param) so tests do not interfere.
"""

from __future__ import annotations

from collections import defaultdict

import trio

from dagd.runtime.executor import StepContext

#: key -> [currently running, most ever running at once]
concurrency: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
#: run id -> calls seen, in order: (step id, attempt)
calls: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)


async def noop(ctx: StepContext) -> None:
    calls[ctx.run_id].append((ctx.step_id, ctx.attempt))


def sync_noop(ctx: StepContext) -> None:
    calls[ctx.run_id].append((ctx.step_id, ctx.attempt))


def raise_value_error(ctx: StepContext) -> None:
    raise ValueError(f"bad value in {ctx.step_id}")


async def async_raise_runtime_error(ctx: StepContext) -> None:
    raise RuntimeError("async boom")


async def fail_until_last_attempt(ctx: StepContext) -> None:
    """Fails every attempt before `params["succeed_on"]` (an attempt number)."""
    calls[ctx.run_id].append((ctx.step_id, ctx.attempt))
    if ctx.attempt < int(ctx.params["succeed_on"]):
        raise RuntimeError(f"attempt {ctx.attempt} failed")


async def always_fail(ctx: StepContext) -> None:
    calls[ctx.run_id].append((ctx.step_id, ctx.attempt))
    raise RuntimeError(f"attempt {ctx.attempt} failed")


async def sleep_forever(ctx: StepContext) -> None:
    await trio.sleep_forever()


async def hold(ctx: StepContext) -> None:
    """Counts how many `hold` steps of the same key run at once, holding each for 1 s (use a
    MockClock). The key is `params["group"]` if given, else the run id."""
    entry = concurrency[ctx.params.get("group", ctx.run_id)]
    entry[0] += 1
    entry[1] = max(entry[1], entry[0])
    try:
        await trio.sleep(1)
    finally:
        entry[0] -= 1


def write_log(ctx: StepContext) -> None:
    ctx.log(f"hello from {ctx.step_id} attempt {ctx.attempt}")


not_callable = 42
