"""The executor seam: what the engine asks of whatever runs a step's attempts, and what a Python
step receives.

An executor (`StepExecutor`) runs one attempt of one step per call: the engine calls `run`
once per attempt, from one of the run's tasks, and any number of attempts of any runs may be in
flight at once. Executors are registered by name (`executor_registry`); the engine picks
each step's with `executor_for(executors, step)`, so a new kind (steps on a Dask cluster, say)
plugs in at the composition root without touching the engine or the run state machine.

Crash recovery: an attempt may leave something running if dagd dies mid-attempt (processes, a
task on a cluster). While it runs, the executor hands the engine a *leftover handle*, a small
JSON-able dict that says how to find those leftovers later; the daemon stores the latest handle
of each step. The next daemon gives the handles of the runs it found unfinished back to
`clean_up_leftovers`, which asks each executor to clean up after its own
(dagd/daemon/recovery.py, before the daemon accepts runs).

The local executor (shell commands and Python callables on this machine) is
`dagd.runtime.local.executor.LocalExecutor`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import attrs

from dagd.core.model import StepSpec
from dagd.core.outcome import RunOutcome
from dagd.runtime.logfiles import attempt_log

log = logging.getLogger("dagd.runtime.executor")

#: The executor of every step that names none.
DEFAULT_EXECUTOR = "local"

#: A step's upstream outputs when there are none (shared: a StepContext is made per attempt).
NO_OUTPUTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({})

#: A leftover handle: JSON-able (str keys; str, int, float, bool, None, lists and dicts as
#: values), opaque to everyone but the executor that made it. It always holds the key
#: "executor", the name of that executor, which `clean_up_leftovers` routes by.
LeftoverHandle = dict[str, Any]


@attrs.frozen
class StepContext:
    """What a Python-callable step receives: which attempt of which step of which run this is.

    `params` are the run's bound params (name -> string value). `attempt` counts from 1 and goes
    on across retries of the run. `log_dir` is the executor's log folder, None when logs are
    not kept. `outcome`: for a lifecycle handler, how its run ended (dagd/core/outcome.py);
    None for an ordinary step. `outputs` are the outputs of the steps upstream of this one
    (every step it depends on, transitively, that gave any): step id -> key -> value, the
    values as the step gave them (a shell step's are strings; docs/dags.md, "Outputs").
    """

    dag_id: str
    run_id: str
    step_id: str
    attempt: int
    params: Mapping[str, str]
    log_dir: Path | None = None
    outcome: RunOutcome | None = None
    outputs: Mapping[str, Mapping[str, Any]] = NO_OUTPUTS

    @property
    def log_path(self) -> Path | None:
        """This attempt's stdout log file (what `log()` appends to); None when logs are not
        kept. Layout: dagd/runtime/logfiles.py."""
        if self.log_dir is None:
            return None
        return attempt_log(
            self.log_dir, self.dag_id, self.run_id, self.step_id, self.attempt, "out"
        )

    def log(self, message: str) -> None:
        """Append `message` as one line to this attempt's log file, making the file and its
        folder if needed; does nothing when logs are not kept. Raises `OSError` if the file
        cannot be written."""
        path = self.log_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(message.rstrip("\n") + "\n")


@attrs.frozen
class AttemptResult:
    """How an attempt ended: `ok`, or not with `error` (a one-line message for people, e.g.
    "exit code 3: <last stderr line>"); `timed_out` when the step's timeout stopped it;
    `worker`, where it ran when that is not this machine (a Dask worker's address), which the
    step's events carry as `worker`; `outputs`, what a successful attempt handed downstream
    (key -> JSON value, checked by dagd/core/outputs.py; None: nothing)."""

    ok: bool
    error: str | None = None
    timed_out: bool = False
    worker: str | None = None
    outputs: Mapping[str, Any] | None = None


@attrs.frozen
class CheckResult:
    """How a step's precondition, or one poll of its wait_for, ended: `ok` (it exited 0);
    `message`, for people, a phrase that follows "precondition" or "the last poll": "exited
    1: <last line of stderr>", "was killed by SIGTERM", "could not start: ..."; `started`,
    False when the command could not be started at all (a missing program or folder)."""

    ok: bool
    message: str
    started: bool = True


class Checker(Protocol):
    """Runs a step's precondition and wait_for commands (the local executor does, on the
    daemon's machine, whatever executor runs the step itself)."""

    async def check(
        self, command: str | tuple[str, ...], step: StepSpec, ctx: StepContext
    ) -> CheckResult:
        """Run `command` once with the step's environment and say how it ended; cancellation
        stops it before `trio.Cancelled` propagates."""
        ...


@attrs.frozen
class Leftover:
    """A stored leftover handle and the step attempt it belongs to (recovery's input)."""

    run_id: str
    step_id: str
    handle: LeftoverHandle


#: Called with an attempt's context and its leftover handle, on the event loop's thread.
LeftoverSink = Callable[[StepContext, LeftoverHandle], None]


class StepExecutor(Protocol):
    """Runs attempts of steps, and cleans up after attempts that a dead daemon left running."""

    @property
    def name(self) -> str:
        """The name it is registered under (a step's `executor`), e.g. "local"."""
        ...

    @property
    def log_dir(self) -> Path | None:
        """Where attempts' logs go (layout: dagd/runtime/logfiles.py); None: not kept. The
        engine puts it in every `StepContext` it makes for this executor."""
        ...

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """Run attempt `ctx.attempt` of `step` to its end and return how it ended.

        - The step's own failure (an exit code, an exception in a callable, a command that
          cannot start) is a result with `ok=False`, never an exception.
        - `step.timeout` (seconds; None: no limit): when it passes, the attempt is stopped and
          the result has `timed_out=True`.
        - Cancellation (the caller's cancel scope): the attempt is stopped before `run`
          returns, everything it started included (for the local executor: SIGTERM to its
          process group, SIGKILL after the grace period), then `trio.Cancelled` propagates.
        - `on_leftover`, if given, is called on the event loop's thread, before `run`
          returns, each time the attempt has something that could outlive a dead daemon,
          with the attempt's `ctx` and a handle that `clean_up` understands; the latest call
          wins. An attempt that leaves nothing behind (an in-process callable) never calls it.
        - Any other exception is a bug in the executor; the engine fails the attempt with an
          "internal error: ..." message.
        """
        ...

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """After a crash: stop whatever attempts of the unfinished runs `run_ids` still run
        here. `leftovers` are the handles this executor gave for those runs' steps (the
        latest per step; a step whose handle was never stored has none, so look for
        `run_ids` too where that is possible). Must never stop anything that is not
        provably dagd's (pids are reused). Logs what it stopped (WARNING) and raises nothing
        for a leftover that is already gone."""
        ...


def executor_name(step: StepSpec) -> str:
    """The name of the executor that runs `step`: its `executor` (the step's own, else its
    DAG's, else "local", as dagd/core/spec.py resolves it)."""
    return step.executor


def executor_for(executors: Mapping[str, StepExecutor], step: StepSpec) -> StepExecutor:
    """The registered executor of `step`. Never raises: for a name that is not registered it
    returns a `MissingExecutor`, so the step fails with a message naming the known ones."""
    name = executor_name(step)
    executor = executors.get(name)
    if executor is None:
        return MissingExecutor(name, tuple(sorted(executors)))
    return executor


@attrs.frozen
class MissingExecutor:
    """Stands in for an executor name that is not registered: every attempt fails with "no
    executor named 'x' (registered: a, b)"; it leaves nothing behind."""

    name: str
    registered: tuple[str, ...]
    log_dir: Path | None = None

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """A failed result; never raises."""
        known = ", ".join(self.registered) or "none"
        return AttemptResult(False, f"no executor named {self.name!r} (registered: {known})")

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """Nothing to clean up."""


def executor_registry(*executors: StepExecutor) -> dict[str, StepExecutor]:
    """`{executor.name: executor}`, the registry the engine and recovery take. Raises
    `ValueError` if two executors share a name."""
    registry: dict[str, StepExecutor] = {}
    for executor in executors:
        if executor.name in registry:
            raise ValueError(f"two executors are named {executor.name!r}")
        registry[executor.name] = executor
    return registry


async def clean_up_leftovers(
    executors: Mapping[str, StepExecutor], leftovers: Iterable[Leftover], run_ids: Collection[str]
) -> None:
    """Recovery's one call: hand each registered executor the leftovers it made (routed by
    their handle's "executor", "local" when a handle has none) and the unfinished `run_ids`.
    A handle of an executor that is no longer registered is logged and skipped; an executor
    whose clean-up fails is logged (with its traceback) and the others still run."""
    mine: dict[str, list[Leftover]] = {name: [] for name in executors}
    for leftover in leftovers:
        name = str(leftover.handle.get("executor", DEFAULT_EXECUTOR))
        if name in mine:
            mine[name].append(leftover)
        else:
            log.warning(
                "cannot clean up after %s/%s: its executor %r is not registered",
                leftover.run_id,
                leftover.step_id,
                name,
            )
    for name, executor in executors.items():
        try:
            await executor.clean_up(mine[name], run_ids)
        except Exception:
            log.exception("executor %r failed to clean up after the previous daemon", name)


def kill_steps_now(executors: StepExecutor | Mapping[str, StepExecutor]) -> None:
    """SIGKILL every running step at once, on each executor that can (`kill_now()`: the local
    one and Dask's; not part of `StepExecutor`, which stops steps through cancellation with a
    grace period). For a second Ctrl-C or SIGTERM during a shutdown."""
    found = executors.values() if isinstance(executors, Mapping) else [executors]
    for executor in found:
        kill_now = getattr(executor, "kill_now", None)
        if callable(kill_now):
            kill_now()
