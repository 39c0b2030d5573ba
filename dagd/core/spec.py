"""TOML text -> DagSpec, reporting every problem at once with its file, step and field.

A user fixing a DAG file should see the whole list in one go, each line saying where the problem
is and, for a typo, what they probably meant.

A DAG file is untrusted input (anyone who can write to the DAG folder): `parse_dag` raises
`DagSpecError` and nothing else, whatever the bytes; numbers are bounded (`LIMITS`,
`MAX_DURATION`) so that no later arithmetic, timer or SQLite column can overflow on them; and
every problem is one printable line (control characters escaped).

Each table's keys are declared once (`DAG_TABLE`, `STEP_TABLE`: kind, default, description);
the reader here and the JSON Schema of dagschema.py are both made from those declarations.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, assert_never

import attrs

from dagd.core.cron import cron_problem, timezone_problem
from dagd.core.dagrefs import reference_problem, step_references, upstream_of
from dagd.core.graph import find_cycle, topological_order
from dagd.core.model import (
    SUBDAG_EXECUTOR,
    DagSpec,
    HandlerKind,
    StepSpec,
    TriggerRule,
    WaitFor,
    param_text,
    param_variable,
)
from dagd.core.outcome import template_problem
from dagd.core.text import env_syntax_problem, one_line, show

ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
CALL_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
#: An executor's name, as in `[executors.<name>]` of config.toml.
EXECUTOR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
#: A pool's name, as in `[pools]` of config.toml.
POOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
#: The executor a step gets when neither it nor its DAG names one: this machine.
DEFAULT_EXECUTOR = "local"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: The longest duration a DAG file may give (`timeout`, `retry_delay`, `max_retry_delay`):
#: 365 days, in seconds.
MAX_DURATION = 365 * 86400.0
#: Integer keys of a DAG file and the ranges they must be in (both ends included).
LIMITS: dict[str, tuple[int, int]] = {
    "retries": (0, 1000),
    "max_active_runs": (1, 10_000),
    "max_active_steps": (1, 10_000),
    "pool_slots": (1, 10_000),
}
#: `retry_backoff`: the factor each retry's delay is multiplied by.
BACKOFF_RANGE = (1.0, 100.0)
#: TOML integers are 64-bit signed (the TOML spec); tomllib reads any length.
INT64 = (-(2**63), 2**63 - 1)

# ------------------------------------------------------------------ the keys, declared once
#
# Each table's keys are declared here once: the kind of value (with its bounds and checks),
# what leaving the key out means, and what it is for. `parse_dag` reads a file by these
# declarations, and dagschema.py turns the same declarations into the JSON Schema editors
# validate against, so the loader and the schema cannot drift apart. What JSON Schema cannot
# say (a cron expression's fields, whether a time zone exists, dependencies and cycles, `$`
# syntax in `env`) is checked by the loader alone.


@attrs.frozen
class Text:
    """A string. It must match `pattern` (else the problem is `mismatch`, where {value} is the
    value shown); `check` is more the loader checks (a value -> why it is wrong, or None);
    without `nul`, a NUL character is refused (no process can be given one)."""

    pattern: re.Pattern[str] | None = None
    mismatch: str = ""
    check: Callable[[str], str | None] | None = None
    nul: bool = True

    def problem(self, value: str) -> str | None:
        """Why `value` is wrong for this key, or None."""
        if self.pattern is not None and not self.pattern.match(value):
            return self.mismatch.format(value=show(value))
        if not self.nul and "\0" in value:
            return "contains a NUL character"
        return self.check(value) if self.check is not None else None


@attrs.frozen
class Flag:
    """true or false."""


@attrs.frozen
class Integer:
    """A whole number from `low` to `high` (both included)."""

    low: int
    high: int

    def problem(self, value: int) -> str | None:
        """Why `value` is out of range, or None."""
        if self.low <= value <= self.high:
            return None
        return f"must be from {self.low} to {self.high}, got {show(value)}"


@attrs.frozen
class Number:
    """An integer or a float from `low` to `high` (both included)."""

    low: float
    high: float


@attrs.frozen
class Duration:
    """`parse_duration`'s text or seconds, at most MAX_DURATION; `positive`: 0 is refused
    (the key is left out for none)."""

    positive: bool = False


@attrs.frozen
class Choice:
    """One of `choices`, a `what` (for the message)."""

    choices: tuple[str, ...]
    what: str

    def problem(self, value: str) -> str | None:
        """Why `value` is not one of the choices (with a suggestion for a typo), or None."""
        if value in self.choices:
            return None
        close = _suggest(value, list(self.choices))
        return f"unknown {self.what} {show(value)}{close}; choose from {', '.join(self.choices)}"


@attrs.frozen
class Command:
    """A shell command line (a non-blank string) or an argv list (non-empty, of strings);
    no NUL character anywhere."""


@attrs.frozen
class StepIds:
    """A list of step ids, or one step id as a string."""


@attrs.frozen
class Names:
    """A table of names (PARAM_RE) to strings, numbers or booleans (`params`, `env`); `env`:
    its values are checked for `$` syntax (text.py)."""

    env: bool = False


@attrs.frozen
class Labels:
    """A list of strings."""


@attrs.frozen
class Steps:
    """The `[steps.<id>]` tables: at least one, ids as ID_RE, each read by STEP_TABLE."""


@attrs.frozen
class Urls:
    """A non-empty list (at most MAX_URLS) of non-blank strings without NUL, each checked for
    `$` syntax (text.py): notification URLs."""


@attrs.frozen
class Handlers:
    """The `[handlers.<kind>]` tables: kinds from HandlerKind, each read by HANDLER_TABLE."""


@attrs.frozen
class InlineTable:
    """An inline table whose keys are declared in `keys` (as a step's are), read into a dict
    of those keys' values; a problem in it names the field as `<key>.<inner key>`."""

    keys: dict[str, Key]


Kind = (
    Text
    | Flag
    | Integer
    | Number
    | Duration
    | Choice
    | Command
    | StepIds
    | Names
    | Labels
    | Steps
    | Urls
    | Handlers
    | InlineTable
)

#: The most notification URLs one handler may give.
MAX_URLS = 20


@attrs.frozen
class Key:
    """One key of a table: its kind, what it is for, and `default`, the value leaving it out
    means, as the file would write it (None: no value, or one that depends on the file, said
    in `description`). `required`: the file must give it."""

    kind: Kind
    description: str
    default: object = None
    required: bool = False


_ID = Text(ID_RE, "{value} is not a valid id (letters, digits, '_', '-', '.')")
_EXECUTOR = Text(EXECUTOR_RE, "{value} is not an executor name (letters, digits, '_', '-')")

#: The keys of a DAG file's top level, in the order the docs list them.
DAG_TABLE: dict[str, Key] = {
    "id": Key(_ID, "The DAG's id; default: the file's name without .toml."),
    "description": Key(Text(), "Shown by `dagd list` and the `dags` answer.", ""),
    "schedule": Key(
        Text(check=cron_problem),
        "Cron expression, 5 fields (minute hour day month weekday), or @hourly, @daily, "
        "@weekly, @monthly, @yearly; none: triggered by hand only.",
    ),
    "timezone": Key(Text(check=timezone_problem), "IANA time zone the schedule is read in.", "UTC"),
    "catchup": Key(
        Flag(), "After downtime, run every missed slot (oldest first), not only the latest.", False
    ),
    "max_active_runs": Key(
        Integer(*LIMITS["max_active_runs"]),
        "Runs of this DAG at once; the rest wait as queued.",
        1,
    ),
    "max_active_steps": Key(
        Integer(*LIMITS["max_active_steps"]),
        "Steps of one run at once; none: no limit but the daemon's max_parallel_steps.",
    ),
    "params": Key(
        Names(),
        "Declared params and their defaults; a run may set only these. A step reads each as "
        "DAGD_PARAM_<NAME>.",
        {},
    ),
    "env": Key(
        Names(env=True),
        "Environment variables for every step; $VAR and ${VAR} expand, $$ is one $.",
        {},
    ),
    "tags": Key(Labels(), "Free-form labels.", []),
    "after": Key(
        Labels(),
        "DAG ids: each successful run of one of them triggers a run of this DAG (given the "
        "params of that run that this DAG declares too); none: only cron and manual runs.",
        [],
    ),
    "executor": Key(
        _EXECUTOR,
        "Where the steps run unless a step says otherwise: local, or an executor configured "
        "in config.toml under [executors.<name>].",
        DEFAULT_EXECUTOR,
    ),
    "steps": Key(Steps(), "The steps, [steps.<step_id>], at least one.", required=True),
    "handlers": Key(
        Handlers(),
        "Lifecycle handlers, [handlers.on_success|on_failure|on_cancel|always]: steps that run "
        "once every step of a run is final, when its outcome matches.",
        {},
    ),
}

#: A step needs exactly one of these keys: what it runs.
ONE_OF_STEP_KEYS = ("command", "call", "run")

#: The keys of a step's `wait_for` table.
WAIT_FOR_TABLE: dict[str, Key] = {
    "command": Key(
        Command(),
        "Polled until it exits 0: a string runs through /bin/sh -c, a list is an argv.",
        required=True,
    ),
    "interval": Key(Duration(positive=True), "Wait between the end of one poll and the next.", 30),
    "timeout": Key(
        Duration(positive=True),
        "The attempt fails when the command has not exited 0 after this long.",
        3600,
    ),
}

#: The keys of a `[steps.<id>]` table, in the order the docs list them.
STEP_TABLE: dict[str, Key] = {
    "command": Key(
        Command(),
        "A string runs through /bin/sh -c; a list is an argv run without a shell. "
        "Exactly one of command, call and run.",
    ),
    "call": Key(
        Text(CALL_RE, "{value} must look like 'package.module:function'"),
        "A Python callable, 'package.module:function', given the step's context. "
        "Exactly one of command, call and run.",
    ),
    "run": Key(
        _ID,
        "A sub-DAG: the id of a DAG each attempt triggers a child run of, and waits for; the "
        "step ends as the child run ends. Exactly one of command, call and run.",
    ),
    "params": Key(
        Names(),
        "A run step's params for its child run; values may hold ${params.<name>} (this run's "
        "param) and ${outputs.<step>.<key>} (an upstream step's output).",
        {},
    ),
    "depends_on": Key(StepIds(), "Upstream step ids (one id may be given as a string).", []),
    "trigger_rule": Key(
        Choice(tuple(rule.value for rule in TriggerRule), "trigger rule"),
        "When the step runs, given its upstream steps' outcomes.",
        TriggerRule.ALL_SUCCESS.value,
    ),
    "retries": Key(Integer(*LIMITS["retries"]), "Extra attempts after a failed one.", 0),
    "retry_delay": Key(
        Duration(), "Wait before the first retry: '90s', '5m', '1h30m', '250ms' or seconds.", 0
    ),
    "retry_backoff": Key(
        Number(*BACKOFF_RANGE), "Each further retry waits this many times longer.", 2
    ),
    "max_retry_delay": Key(Duration(), "The longest wait between attempts; none: no cap."),
    "timeout": Key(
        Duration(positive=True),
        "An attempt running longer is stopped and fails; none: no timeout.",
    ),
    "env": Key(
        Names(env=True),
        "More environment variables, over the DAG's env; $VAR and ${VAR} expand.",
        {},
    ),
    "cwd": Key(Text(nul=False), "Working directory of a shell step; default: the daemon's."),
    "description": Key(Text(), "What the step does, for people.", ""),
    "executor": Key(
        _EXECUTOR,
        "Where this step's attempts run; default: the DAG's executor.",
    ),
    "precondition": Key(
        Command(),
        "Run on the daemon's machine before each attempt: exit 0 runs the attempt, any other "
        "exit skips the step (a string runs through /bin/sh -c, a list is an argv).",
    ),
    "wait_for": Key(
        InlineTable(WAIT_FOR_TABLE),
        "Poll a command on the daemon's machine before each attempt (after the "
        "precondition) until it exits 0: { command, interval, timeout }.",
    ),
    "pool": Key(
        Text(POOL_RE, "{value} is not a pool name (letters, digits, '_', '-')"),
        "A pool configured in config.toml under [pools]: each attempt waits for a slot of it "
        "(earlier-triggered runs first) and holds it until the attempt ends; none: no pool.",
    ),
    "pool_slots": Key(
        Integer(*LIMITS["pool_slots"]),
        "Slots of its pool each attempt holds (at most the pool's size).",
        1,
    ),
}

#: A handler needs exactly one of these keys: what it runs, or whom it notifies.
ONE_OF_HANDLER_KEYS = ("command", "call", "notify")
_TEMPLATE = Text(check=template_problem)

#: A step's keys that a handler does not take: its place in the graph, what gates an attempt
#: (a handler runs when its run's outcome matches, or not at all), a sub-DAG's, and a pool.
NOT_FOR_HANDLERS = (
    "depends_on",
    "trigger_rule",
    "precondition",
    "wait_for",
    "run",
    "params",
    "pool",
    "pool_slots",
)
#: The keys of a `[handlers.<kind>]` table: a step's but NOT_FOR_HANDLERS, and a
#: notification's.
HANDLER_TABLE: dict[str, Key] = {
    **{k: v for k, v in STEP_TABLE.items() if k not in NOT_FOR_HANDLERS},
    "command": Key(
        Command(),
        "A string runs through /bin/sh -c; a list is an argv run without a shell. "
        "Exactly one of command, call and notify.",
    ),
    "call": Key(
        Text(CALL_RE, "{value} must look like 'package.module:function'"),
        "A Python callable, 'package.module:function', given the step's context (its "
        "`outcome`). Exactly one of command, call and notify.",
    ),
    "notify": Key(
        Urls(),
        "Apprise URLs to send a notification to (json://, mailto://, slack://, ntfy://, ...); "
        "$VAR and ${VAR} expand when it is sent. Exactly one of command, call and notify.",
    ),
    "title": Key(_TEMPLATE, "A notification's title: {dag}, {run_id}, {status}, ... fields."),
    "body": Key(_TEMPLATE, "A notification's body: {dag}, {run_id}, {status}, ... fields."),
}

#: The keys each table accepts (any other is a problem with a suggestion).
DAG_KEYS = list(DAG_TABLE)
STEP_KEYS = list(STEP_TABLE)
HANDLER_KEYS = list(HANDLER_TABLE)
#: The keys of a notification handler that only a command or call can use.
NOT_FOR_NOTIFY = ("cwd", "executor")
#: The keys a run step (a sub-DAG) has no use for: the child run's steps have their own. A
#: pool slot held while its child run's steps wait for the same pool could never be freed.
NOT_FOR_RUN = ("cwd", "executor", "env", "timeout", "pool", "pool_slots")


@attrs.frozen
class Problem:
    """One thing wrong with a DAG file. `step` and `field` are None when they don't apply."""

    file: str
    message: str
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        """One printable line: `file: step 'id': field 'name': message` (control characters
        and newlines escaped, whatever the file name or the text quoted from the file)."""
        where = [self.file]
        if self.step is not None:
            where.append(f"step {show(self.step)}")
        if self.field is not None:
            where.append(f"field {show(self.field)}")
        return one_line(f"{': '.join(where)}: {self.message}")


class DagSpecError(ValueError):
    """A DAG file that cannot be used; `problems` lists everything wrong with it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def parse_duration(value: object, maximum: float = MAX_DURATION) -> float:
    """`"90s"`, `"5m"`, `"1h30m"`, `"250ms"` or a plain number of seconds -> seconds, at
    most `maximum`. Raises ValueError (only) for anything else, saying what to write."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '90s', '5m', '1h' or seconds, got {value!r}")
    if isinstance(value, int) and not -maximum <= value <= maximum:  # float() may overflow
        seconds = float("inf")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match[1]) * _UNIT_SECONDS[match[2]]
                pos = match.end()
            if pos != len(text) or pos == 0:
                raise ValueError(
                    f"cannot read duration {show(value)}: use e.g. '90s', '5m', '1h30m' or seconds"
                ) from None
    else:
        raise ValueError(
            f"expected a duration like '90s', '5m', '1h' or seconds, got {show(value)}"
        )
    if not 0 <= seconds <= maximum:  # also NaN and infinity
        raise ValueError(
            f"duration must be between 0 and {maximum:.0f} seconds ({maximum / 86400:g} days), "
            f"got {show(value)}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as a DAG file writes a duration, the inverse of `parse_duration`: 7200 ->
    '2h', 5400 -> '1h30m', 90 -> '1m30s', 0.25 -> '250ms', 1.5 -> '1.5s', 0 -> '0s'."""
    whole = int(seconds)
    if seconds != whole or whole == 0:
        if 0 < seconds < 1 and round(seconds * 1000) == seconds * 1000:
            return f"{round(seconds * 1000)}ms"
        return f"{whole}s" if seconds == whole else f"{seconds:.3f}".rstrip("0") + "s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


Table = Mapping[str, Any]  # a TOML table as tomllib reads it
T = TypeVar("T")
D = TypeVar("D")
Check = Callable[[T], "str | None"]  # a value -> why it is wrong, or None


class _Reader:
    """Collects problems while reading one file's tables."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, message: str, step: str | None = None, field: str | None = None) -> None:
        """Record one problem, at the step and field it concerns (None: the DAG itself)."""
        self.problems.append(Problem(self.file, message, step, field))

    def unknown_keys(self, table: Table, allowed: list[str], step: str | None) -> None:
        """Record a problem, with a suggestion, for each key of `table` not in `allowed`."""
        for key in table:
            if key not in allowed:
                self.problem(f"unknown key{_suggest(key, allowed)}", step, key)

    def get(
        self,
        table: Table,
        key: str,
        kind: type[T] | tuple[type[T], ...],
        *,
        default: D,
        step: str | None = None,
        check: Check[T] | None = None,
    ) -> T | D:
        """table[key] if it is a `kind` (an int is never a bool) and passes `check`, else
        `default`, with a problem recorded for a value that is there but wrong."""
        if key not in table:
            return default
        value = table[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.problem(f"expected an integer, got {show(value)}", step, key)
            return default
        if not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            names = names.replace("str", "string").replace("dict", "table")
            self.problem(f"expected a {names}, got {show(value)}", step, key)
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problem(message, step, key)
                return default
        return value

    def duration(self, table: Table, key: str, *, default: D, step: str | None = None) -> float | D:
        """table[key] read by `parse_duration` (seconds), else `default`, with a problem
        recorded for a value that is there but cannot be read."""
        if key not in table:
            return default
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            self.problem(str(exc), step, key)
            return default

    def string_table(self, table: Table, key: str, step: str | None = None) -> dict[str, str]:
        """table[key] as names -> text (`params`, `env`): bad names and values that are not
        strings, numbers or booleans are recorded as problems and left out."""
        raw = self.get(table, key, dict, default={}, step=step)
        out: dict[str, str] = {}
        for name, value in raw.items():
            if not PARAM_RE.match(name):
                self.problem(f"{show(name)} is not a valid name (letters, digits, _)", step, key)
            elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
                self.problem(f"value of {name!r} is not a 64-bit integer", step, key)
            elif isinstance(value, str) and "\0" in value:
                self.problem(f"value of {name!r} contains a NUL character", step, key)
            elif isinstance(value, str | int | float | bool):
                out[name] = param_text(value)
            else:
                self.problem(f"value of {name!r} must be a string or number", step, key)
        return out

    def env_table(self, table: Table, key: str, step: str | None = None) -> dict[str, str]:
        """`string_table` of `key` (`env`), each value checked for `$` syntax (text.py)."""
        env = self.string_table(table, key, step)
        for name, value in env.items():
            message = env_syntax_problem(value)
            if message is not None:
                self.problem(f"value of {name!r}: {message}", step, key)
        return env


_DECLARED: Any = object()  # `_read`'s default: the key's declared default


def _declared_default(key: Key) -> Any:
    """A key's declared default as the value a spec holds (lists as tuples, numbers of a
    Duration or Number as floats, a fresh copy of a table)."""
    value = key.default
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(key.kind, Duration | Number) and value is not None:
        return float(value)  # type: ignore[arg-type]
    return value


def _read(
    r: _Reader,
    keys: Mapping[str, Key],
    table: Table,
    name: str,
    step: str | None = None,
    default: Any = _DECLARED,
) -> Any:
    """table[name] read as `keys[name]` declares it, else `default` (the declared one unless
    given), with a problem recorded for a value that is there but wrong."""
    key = keys[name]
    if default is _DECLARED:
        default = _declared_default(key)
    if name not in table:
        return default
    kind = key.kind
    match kind:
        case Text() | Choice():
            return r.get(table, name, str, default=default, step=step, check=kind.problem)
        case Flag():
            return r.get(table, name, bool, default=default, step=step)
        case Integer():
            return r.get(table, name, int, default=default, step=step, check=kind.problem)
        case Number():
            value = table[name]
            # A bool is an int to Python, never a number here; the comparison refuses NaN.
            if isinstance(value, bool) or not isinstance(value, int | float):
                ok = False
            else:
                ok = kind.low <= value <= kind.high
            if not ok:
                r.problem(
                    f"must be a number from {kind.low:g} to {kind.high:g}, got {show(value)}",
                    step,
                    name,
                )
                return default
            return float(value)
        case Duration():
            seconds = r.duration(table, name, default=default, step=step)
            if kind.positive and seconds == 0:
                # The hint only where leaving the key out means none (a step's `timeout`).
                hint = f" (leave it out for no {name})" if key.default is None else ""
                r.problem(f"must be greater than 0{hint}", step, name)
                return default
            return seconds
        case Command():
            return _read_command(r, table, name, step)
        case StepIds():
            deps = r.get(table, name, (list, str), default=None, step=step)
            if deps is None:
                return default
            if isinstance(deps, str):
                deps = [deps]
            if not all(isinstance(d, str) for d in deps):
                r.problem("must be a list of step ids", step, name)
                return default
            return tuple(dict.fromkeys(deps))
        case Names():
            return r.env_table(table, name, step) if kind.env else r.string_table(table, name, step)
        case Labels():
            labels = r.get(table, name, list, default=None, step=step)
            if labels is None:
                return default
            if not all(isinstance(label, str) for label in labels):
                r.problem("must be a list of strings", step, name)
                return default
            return tuple(labels)
        case Steps() | Handlers():
            return r.get(table, name, dict, default=default, step=step)
        case Urls():
            urls = r.get(table, name, list, default=None, step=step)
            if urls is None:
                return default
            if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
                r.problem("must be a non-empty list of URLs", step, name)
                return default
            if len(urls) > MAX_URLS:
                r.problem(f"at most {MAX_URLS} URLs, got {len(urls)}", step, name)
                return default
            for i, url in enumerate(urls):
                message = "contains a NUL character" if "\0" in url else env_syntax_problem(url)
                if message is not None:
                    r.problem(f"URL {i + 1}: {message}", step, name)
                    return default
            return tuple(urls)
        case InlineTable():
            return _read_table(r, kind, table, name, step, default)
    assert_never(kind)


def _read_table(
    r: _Reader, kind: InlineTable, table: Table, name: str, step: str | None, default: Any
) -> Any:
    """An inline table of declared keys -> {key: value}, else `default` with its problems
    recorded, each at field `<name>.<key>`."""
    raw = r.get(table, name, dict, default=None, step=step)
    if raw is None:
        return default
    inner = _Reader(r.file)
    inner.unknown_keys(raw, list(kind.keys), step)
    values = {key: _read(inner, kind.keys, raw, key, step) for key in kind.keys}
    for key, declared in kind.keys.items():
        if declared.required and key not in raw:
            inner.problem("is required", step, key)
    for problem in inner.problems:
        r.problems.append(attrs.evolve(problem, field=f"{name}.{problem.field}"))
    return default if inner.problems else values


def _read_command(
    r: _Reader, table: Table, name: str, step: str | None
) -> str | tuple[str, ...] | None:
    """A step's `command`: a non-blank string, or an argv list of strings; None (with a
    problem recorded) for anything else."""
    raw = r.get(table, name, (str, list), default=None, step=step)
    if isinstance(raw, list):
        if not raw or not all(isinstance(a, str) for a in raw):
            r.problem("an argv list must be a non-empty list of strings", step, name)
        elif any("\0" in a for a in raw):
            r.problem("contains a NUL character", step, name)
        else:
            return tuple(raw)
    elif isinstance(raw, str):
        if not raw.strip():
            r.problem("must not be empty", step, name)
        elif "\0" in raw:
            r.problem("contains a NUL character", step, name)
        return raw
    return None


def _read_step(
    r: _Reader, step_id: str, raw: object, dag_env: dict[str, str], dag_executor: str
) -> StepSpec | None:
    """One `[steps.<id>]` table -> StepSpec, or None if it is not a table at all."""
    if not isinstance(raw, dict):
        r.problem("must be a table ([steps.<id>])", step_id)
        return None
    if not ID_RE.match(step_id):
        r.problem("step ids use letters, digits, '_', '-' and '.', at most 128", step_id)
    r.unknown_keys(raw, STEP_KEYS, step_id)

    def read(name: str, default: Any = _DECLARED) -> Any:
        return _read(r, STEP_TABLE, raw, name, step_id, default)

    if sum(name in raw for name in ONE_OF_STEP_KEYS) != 1:
        r.problem("a step needs exactly one of 'command', 'call' or 'run'", step_id)
    run: str | None = read("run")
    run_params: dict[str, str] = read("params") if "run" in raw else {}
    if "params" in raw and "run" not in raw:
        r.problem('only a run step (run = "<dag>") takes params', step_id, "params")
    if "run" in raw:
        for name in NOT_FOR_RUN:
            if name in raw:
                r.problem("a run step takes no " + name, step_id, name)
        for name, value in run_params.items():
            message = reference_problem(value)
            if message is not None:
                r.problem(f"value of {name!r}: {message}", step_id, "params")
    return StepSpec(
        id=step_id,
        **_shared_step_fields(read, dag_env),
        depends_on=read("depends_on"),
        trigger_rule=TriggerRule(read("trigger_rule")),
        executor=SUBDAG_EXECUTOR if "run" in raw else read("executor", dag_executor),
        precondition=read("precondition"),
        wait_for=_wait_for(read("wait_for")),
        run=run,
        run_params=run_params,
        pool=read("pool"),
        pool_slots=read("pool_slots"),
    )


def _read_handler(
    r: _Reader, kind_name: str, raw: object, dag_env: dict[str, str], dag_executor: str
) -> StepSpec | None:
    """One `[handlers.<kind>]` table -> the handler's StepSpec (id `@<kind>`), or None."""
    try:
        kind = HandlerKind(kind_name)
    except ValueError:
        kinds = [k.value for k in HandlerKind]
        r.problem(
            f"unknown handler {show(kind_name)}{_suggest(kind_name, kinds)}; "
            f"choose from {', '.join(kinds)}",
            field="handlers",
        )
        return None
    where = f"handlers.{kind.value}"  # how a problem names it, as the file writes it
    if not isinstance(raw, dict):
        r.problem(f"must be a table ([{where}])", where)
        return None
    r.unknown_keys(raw, HANDLER_KEYS, where)

    def read(name: str, default: Any = _DECLARED) -> Any:
        return _read(r, HANDLER_TABLE, raw, name, where, default)

    if sum(name in raw for name in ONE_OF_HANDLER_KEYS) != 1:
        r.problem("a handler needs exactly one of 'command', 'call' or 'notify'", where)
    notify: tuple[str, ...] = read("notify", ())
    if "notify" in raw:
        for name in NOT_FOR_NOTIFY:
            if name in raw:
                r.problem("only a command or call handler takes it", where, name)
    else:
        for name in ("title", "body"):
            if name in raw:
                r.problem("only a notify handler takes it", where, name)
    return StepSpec(
        id=kind.step_id,
        **_shared_step_fields(read, dag_env),
        executor=DEFAULT_EXECUTOR if notify else read("executor", dag_executor),
        handler=kind,
        notify=notify,
        title=read("title"),
        body=read("body"),
    )


def _shared_step_fields(read: Callable[[str], Any], dag_env: dict[str, str]) -> dict[str, Any]:
    """The StepSpec fields an ordinary step and a lifecycle handler read alike, by `read`."""
    step_env: dict[str, str] = read("env")
    return {
        "command": read("command"),
        "call": read("call"),
        "retries": read("retries"),
        "retry_delay": read("retry_delay"),
        "retry_backoff": read("retry_backoff"),
        "max_retry_delay": read("max_retry_delay"),
        "timeout": read("timeout"),
        "env": {**dag_env, **step_env},
        # Expansion order (environment.py): the DAG's entries, then the step's.
        "env_order": (*dag_env.items(), *step_env.items()),
        "cwd": read("cwd"),
        "description": read("description"),
    }


def _wait_for(values: dict[str, Any] | None) -> WaitFor | None:
    """A `wait_for` table's values (InlineTable's reading) -> WaitFor."""
    if values is None or values["command"] is None:
        return None
    return WaitFor(values["command"], values["interval"], values["timeout"])


def decode_text(data: str | bytes) -> str:
    """A file's bytes (or text) as text: UTF-8, without a leading byte-order mark (editors on
    Windows write one). Raises UnicodeDecodeError (a ValueError) for bytes that are not UTF-8."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return text.removeprefix("\ufeff")


def parse_dag(text: str | bytes, file: str = "<string>", default_id: str | None = None) -> DagSpec:
    """Read one DAG file's text (or its bytes: UTF-8, a byte-order mark is skipped). Raises
    DagSpecError listing every problem found, and never any other exception: whatever fails
    while reading the file is that file's problem."""
    try:
        return _parse_dag(text, file, default_id)
    except DagSpecError:
        raise
    except RecursionError:
        message = "nested too deeply (arrays or tables inside each other hundreds of levels)"
        raise DagSpecError([Problem(file, message)]) from None
    except MemoryError:
        raise DagSpecError([Problem(file, "too large to read")]) from None
    except Exception as exc:  # a failure of this file must stay this file's problem
        message = f"cannot be read ({type(exc).__name__}: {show(str(exc))}); please report this"
        raise DagSpecError([Problem(file, message)]) from None


def _parse_dag(text: str | bytes, file: str, default_id: str | None) -> DagSpec:
    r = _Reader(file)
    try:
        doc = tomllib.loads(decode_text(text))
    except UnicodeDecodeError as exc:
        raise DagSpecError([Problem(file, f"not UTF-8 text: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise DagSpecError([Problem(file, f"not valid TOML: {exc}")]) from None
    r.unknown_keys(doc, DAG_KEYS, None)

    def read(name: str, default: Any = _DECLARED) -> Any:
        return _read(r, DAG_TABLE, doc, name, None, default)

    # The id is checked whether the file gives it or it comes from the file's name.
    dag_id = r.get(doc, "id", str, default=default_id)
    if dag_id is None:
        r.problem("missing 'id'", field="id")
    else:
        message = _ID.problem(dag_id)
        if message is not None:
            r.problem(message, field="id")
    schedule = read("schedule")
    tz = read("timezone")
    dag_env: dict[str, str] = read("env")
    dag_executor: str = read("executor")
    raw_steps = read("steps", {})
    if not raw_steps and isinstance(doc.get("steps", {}), dict):
        r.problem("a DAG needs at least one step ([steps.<id>] with a command or call)")
    steps: dict[str, StepSpec] = {}
    for step_id, raw in raw_steps.items():
        step = _read_step(r, step_id, raw, dag_env, dag_executor)
        if step is not None:
            steps[step_id] = step
    known = list(steps)
    for step in steps.values():
        for dep in step.depends_on:
            if dep == step.id:
                r.problem("a step cannot depend on itself", step.id, "depends_on")
            elif dep not in steps:
                r.problem(f"unknown step {show(dep)}{_suggest(dep, known)}", step.id, "depends_on")
    deps = {s.id: tuple(d for d in s.depends_on if d != s.id) for s in steps.values()}
    order = topological_order(deps)
    if order is None:
        cycle = find_cycle(deps) or []
        # Show it in the direction work flows: upstream -> downstream.
        r.problem(f"dependency cycle: {' -> '.join(reversed(cycle))}", field="depends_on")
    raw_handlers: dict[str, Any] = read("handlers")
    read_handlers = {
        name: _read_handler(r, name, raw, dag_env, dag_executor)
        for name, raw in raw_handlers.items()
    }
    handlers = {  # in HandlerKind's order, whatever the file's
        kind.step_id: handler
        for kind in HandlerKind
        if (handler := read_handlers.get(kind.value)) is not None
    }
    max_active_steps = read("max_active_steps")
    params: dict[str, str] = read("params")
    after: tuple[str, ...] = read("after")
    for upstream in after:
        message = _ID.problem(upstream)
        if message is not None:
            r.problem(message, field="after")
        elif upstream == dag_id:
            r.problem("a DAG cannot run after itself", field="after")
    for step in steps.values():
        for ref in step_references(step):
            if ref[0] == "params" and ref[1] not in params:
                r.problem(f"no param {ref[1]!r} is declared", step.id, "params")
            elif ref[0] == "outputs" and ref[1] not in upstream_of(steps, step.id):
                r.problem(
                    f"step {ref[1]!r} is not upstream of this one (depends_on)", step.id, "params"
                )
    by_var: dict[str, str] = {}
    for name in params:
        var = param_variable(name)
        if var in by_var:
            r.problem(
                f"params {by_var[var]!r} and {name!r} would both be {var}: rename one",
                field="params",
            )
        else:
            by_var[var] = name
    dag = DagSpec(
        id=dag_id or "",
        steps=steps,
        order=order or (),
        description=read("description"),
        schedule=schedule,
        timezone=tz,
        catchup=read("catchup"),
        max_active_runs=read("max_active_runs"),
        max_active_steps=max_active_steps,
        params=params,
        env=dag_env,
        tags=read("tags"),
        source=file,
        executor=dag_executor,
        handlers=handlers,
        after=tuple(dict.fromkeys(after)),
    )
    if r.problems:
        raise DagSpecError(r.problems)
    return dag
