"""Python-callable lifecycle handlers used by tests/runtime/test_handlers.py
(`handlerfuncs:<name>`)."""

from __future__ import annotations

from dagd.core.outcome import RunOutcome
from dagd.runtime.executor import StepContext

#: run id -> the outcome its handler was given
seen: dict[str, RunOutcome] = {}


def record(ctx: StepContext) -> None:
    assert ctx.outcome is not None
    seen[ctx.run_id] = ctx.outcome
