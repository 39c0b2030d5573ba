"""The DAG model: what a user wrote, validated, as frozen values; and the statuses of runs and
steps, with the sets and buckets every layer reads them through.

Status values are stable strings: they go on the wire and into SQLite, so renaming one is a
protocol change. The finished sets (`FINISHED_RUN`, `RETRYABLE_RUN`, `FINISHED_STEP`,
`FAILED_STEP`) and the progress buckets (`ProgressBucket`, `BUCKET_OF`) are defined here once:
compare statuses with them, never with string copies.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Mapping
from typing import Final

import attrs

from dagd.core.text import show

#: The executor name of sub-DAG steps (`run = "<dag>"`): the daemon carries them out
#: (dagd/daemon/subdag.py); no executor of config.toml can take the name.
SUBDAG_EXECUTOR = "dag"
#: How deep sub-DAG runs may nest: a run at depth 0 (not a child) may have children, ... down
#: to this depth; a step whose child would be deeper fails (docs/dags.md, "Sub-DAGs").
MAX_SUBDAG_DEPTH = 8

#: The longest param value a run accepts, in bytes of UTF-8 (an environment variable holds at
#: most 128 KiB on Linux).
MAX_PARAM_BYTES = 65536


def param_text(value: object) -> str:
    """A param value as the text a step sees, written as in TOML (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def param_variable(name: str) -> str:
    """The environment variable a step reads param `name` from: `DAGD_PARAM_<NAME>`
    (upper-cased, so `date` and `DATE` would share one: the DAG file check refuses that)."""
    return f"DAGD_PARAM_{name.upper()}"


def _given_param_text(name: str, value: object) -> str:
    """One param value given to a trigger, as text; ValueError (only) for what a step could
    not be given or dagd could not store."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"param {name!r}: an integer must fit in 64 bits")
    elif not isinstance(value, str | float | bool):
        raise ValueError(
            f"param {name!r}: expected a string, number or boolean, got {type(value).__name__}"
        )
    text = param_text(value)
    if "\0" in text:
        raise ValueError(f"param {name!r}: the value contains a NUL character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"param {name!r}: the value is not valid Unicode text") from None
    if size > MAX_PARAM_BYTES:
        raise ValueError(f"param {name!r}: the value is over {MAX_PARAM_BYTES} bytes")
    return text


class RunStatus(enum.StrEnum):
    """A run's status: queued -> running -> success | failed | cancelled (a failed or
    cancelled run may be retried: queued again). The value is the wire and database text."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the statuses in `FINISHED_RUN`: the run is over."""
        return self in FINISHED_RUN


#: A run in one of these is over: nothing of it runs or waits any more.
FINISHED_RUN: Final = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELLED})
#: A run in one of these can be retried (its successful steps are kept).
RETRYABLE_RUN: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(enum.StrEnum):
    """A step's status within a run (docs/protocol.md lists the transitions). The value is
    the wire and database text."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the statuses in `FINISHED_STEP`: the step will not run again in this try."""
        return self in FINISHED_STEP


#: A step in one of these is final for this try of its run.
FINISHED_STEP: Final = frozenset(
    {
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.UPSTREAM_FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
    }
)
#: Upstream outcomes that count as "failed" for trigger rules.
FAILED_STEP: Final = frozenset(
    {StepStatus.FAILED, StepStatus.UPSTREAM_FAILED, StepStatus.CANCELLED}
)
#: Step outcomes that make a run that was not cancelled end failed.
RUN_FAILING_STEP: Final = frozenset({StepStatus.FAILED, StepStatus.UPSTREAM_FAILED})


class ProgressBucket(enum.StrEnum):
    """The four counts of a run's progress (the protocol's `dag_run_progress`); every step
    is in exactly one, given by `BUCKET_OF[status]`."""

    COMPLETED = "completed"
    RUNNING = "running"
    FAILED = "failed"
    PENDING = "pending"


#: Which progress bucket each step status counts in (the protocol's definition).
BUCKET_OF: Final[Mapping[StepStatus, ProgressBucket]] = {
    StepStatus.PENDING: ProgressBucket.PENDING,
    StepStatus.RUNNING: ProgressBucket.RUNNING,
    StepStatus.RETRYING: ProgressBucket.RUNNING,
    StepStatus.SUCCESS: ProgressBucket.COMPLETED,
    StepStatus.SKIPPED: ProgressBucket.COMPLETED,
    StepStatus.FAILED: ProgressBucket.FAILED,
    StepStatus.UPSTREAM_FAILED: ProgressBucket.FAILED,
    StepStatus.CANCELLED: ProgressBucket.FAILED,
}


class TriggerRule(enum.StrEnum):
    """When a step runs, given its upstream steps' outcomes (Airflow's names and meanings)."""

    ALL_SUCCESS = "all_success"  # every upstream succeeded
    ALL_DONE = "all_done"  # every upstream finished, whatever the outcome
    ONE_FAILED = "one_failed"  # at least one upstream failed (runs as soon as one does)
    ONE_SUCCESS = "one_success"  # at least one upstream succeeded (runs as soon as one does)
    NONE_FAILED = "none_failed"  # every upstream finished and none failed (skipped is fine)


class HandlerKind(enum.StrEnum):
    """A lifecycle handler of a DAG (`[handlers.<kind>]`): a step that runs once every
    ordinary step of a run is final, when the run's outcome matches (`HANDLERS_OF`). The
    value is the DAG file's key, and the wire's `handler` of its step."""

    ON_SUCCESS = "on_success"
    ON_FAILURE = "on_failure"
    ON_CANCEL = "on_cancel"
    ALWAYS = "always"

    @property
    def step_id(self) -> str:
        """The handler's step id in a run: `@` and its kind (`@on_failure`). No ordinary
        step id can hold `@`, so the two never collide."""
        return f"@{self.value}"


#: Which handlers run for each outcome of a run, in the order they run (one at a time).
HANDLERS_OF: Final[Mapping[RunStatus, tuple[HandlerKind, ...]]] = {
    RunStatus.SUCCESS: (HandlerKind.ON_SUCCESS, HandlerKind.ALWAYS),
    RunStatus.FAILED: (HandlerKind.ON_FAILURE, HandlerKind.ALWAYS),
    RunStatus.CANCELLED: (HandlerKind.ON_CANCEL, HandlerKind.ALWAYS),
}


@attrs.frozen
class WaitFor:
    """A step's `wait_for`: run `command` (a string for /bin/sh -c, or an argv tuple) every
    `interval` seconds until it exits 0; after `timeout` seconds the attempt fails."""

    command: str | tuple[str, ...]
    interval: float = 30.0
    timeout: float = 3600.0


def command_text(command: str | tuple[str, ...]) -> str:
    """A command as one line for people: a string as written, an argv shell-quoted."""
    return command if isinstance(command, str) else shlex.join(command)


@attrs.frozen
class StepSpec:
    """One step of a DAG, or a lifecycle handler (`handler` set). Exactly one of `command`
    and `call` is set, or, for a handler only, `notify` instead."""

    id: str
    command: str | tuple[str, ...] | None = None
    call: str | None = None
    depends_on: tuple[str, ...] = ()
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 2.0
    max_retry_delay: float | None = None
    timeout: float | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: str | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    description: str = ""
    # The executor that runs its attempts: "local" (this machine) or a name configured under
    # `[executors.<name>]` in config.toml, such as "dask".
    executor: str = "local"
    # `env` as written, in the order its `$VAR` references expand: the DAG's entries, then the
    # step's (a name the step sets again appears twice). Empty: `env` in its own order.
    env_order: tuple[tuple[str, str], ...] = ()
    # A lifecycle handler's kind (None: an ordinary step). Its id is `handler.step_id`.
    handler: HandlerKind | None = None
    # A notification handler: Apprise URLs as written (`$VAR` expands when it is sent), and
    # the title and body templates (None: dagd's own; dagd/core/outcome.py).
    notify: tuple[str, ...] = ()
    title: str | None = None
    body: str | None = None
    # Checked before each attempt, on this machine (docs/dags.md): exit 0 runs the attempt,
    # anything else skips the step. A string runs through /bin/sh -c, a tuple is an argv.
    precondition: str | tuple[str, ...] | None = None
    # Polled before each attempt (after `precondition`) until it exits 0.
    wait_for: WaitFor | None = None
    # A sub-DAG step: the id of the DAG each attempt triggers a child run of (and waits for),
    # and the params given to it (name -> text with `${params.x}` and `${outputs.step.key}`
    # references, dagd/core/dagrefs.py). Its `executor` is SUBDAG_EXECUTOR.
    run: str | None = None
    run_params: Mapping[str, str] = attrs.field(factory=dict)
    # The pool (config.toml's `[pools]`) whose slots each attempt holds, and how many.
    pool: str | None = None
    pool_slots: int = 1

    @property
    def max_attempts(self) -> int:
        """Attempts a step gets in one try of its run: the first plus `retries`."""
        return self.retries + 1


@attrs.frozen
class DagSpec:
    """A whole DAG file. `steps` keeps file order; `order` is a topological order of step ids."""

    id: str
    steps: Mapping[str, StepSpec]
    order: tuple[str, ...]
    description: str = ""
    schedule: str | None = None
    timezone: str = "UTC"
    catchup: bool = False
    max_active_runs: int = 1
    max_active_steps: int | None = None
    params: Mapping[str, str] = attrs.field(factory=dict)
    env: Mapping[str, str] = attrs.field(factory=dict)
    tags: tuple[str, ...] = ()
    source: str | None = None  # the file it came from, for error messages
    # The DAG-level `executor` as written (each step's own `executor` is what runs it): kept
    # so a problem with it is reported once, at the DAG's key, not at every step.
    executor: str = "local"
    # Lifecycle handlers by step id (`@on_failure`, ...), in the order of `HandlerKind`: not
    # part of the graph (`steps`, `order`); a run runs the matching ones at its end.
    handlers: Mapping[str, StepSpec] = attrs.field(factory=dict)
    # DAG ids whose successful runs trigger a run of this one (`after`, docs/dags.md).
    after: tuple[str, ...] = ()

    def bind_params(self, given: Mapping[str, object] | None) -> dict[str, str]:
        """Declared defaults overlaid with `given` (name -> string, number or boolean), as
        the text steps see. Raises ValueError, and nothing else whatever `given` holds, for:
        an undeclared name; a value of another type; an integer beyond 64 bits; a value with
        a NUL character or a lone surrogate, or over MAX_PARAM_BYTES bytes of UTF-8."""
        if given is None:
            return dict(self.params)
        if not isinstance(given, Mapping):
            raise ValueError(f"params must be a table of names to values, got {show(given)}")
        unknown = sorted(show(name) for name in given if name not in self.params)
        if unknown:
            declared = ", ".join(sorted(self.params)) or "none"
            raise ValueError(
                f"DAG {self.id!r} has no param {', '.join(unknown[:10])} "
                f"(declared params: {declared})"
            )
        bound = dict(self.params)
        for name, value in given.items():
            bound[name] = _given_param_text(name, value)
        return bound
