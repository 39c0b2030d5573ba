"""TOML text -> DagSpec, reporting every problem at once with its file, step and field.

A user fixing a DAG file should see the whole list in one go, each line saying where the problem
is and, for a typo, what they probably meant.

A DAG file is untrusted input (anyone who can write to the DAG folder): `parse_dag` raises
`DagSpecError` and nothing else, whatever the bytes; numbers are bounded (`LIMITS`,
`MAX_DURATION`) so that no later arithmetic, timer or SQLite column can overflow on them; and
every problem is one printable line (control characters escaped).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from dagd.core.cron import cron_problem, timezone_problem
from dagd.core.graph import find_cycle, topological_order
from dagd.core.model import DagSpec, StepSpec, TriggerRule, param_text, param_variable
from dagd.core.text import env_syntax_problem, one_line, show

ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
CALL_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
#: An executor's name, as in `[executors.<name>]` of config.toml.
EXECUTOR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
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
}
#: `retry_backoff`: the factor each retry's delay is multiplied by.
BACKOFF_RANGE = (1.0, 100.0)
#: TOML integers are 64-bit signed (the TOML spec); tomllib reads any length.
INT64 = (-(2**63), 2**63 - 1)

DAG_KEYS = [
    "id",
    "description",
    "schedule",
    "timezone",
    "catchup",
    "max_active_runs",
    "max_active_steps",
    "params",
    "env",
    "tags",
    "executor",
    "steps",
]
STEP_KEYS = [
    "command",
    "call",
    "depends_on",
    "retries",
    "retry_delay",
    "retry_backoff",
    "max_retry_delay",
    "timeout",
    "env",
    "cwd",
    "trigger_rule",
    "description",
    "executor",
]


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

    def env_table(self, table: Table, step: str | None = None) -> dict[str, str]:
        """`string_table` of `env`, each value checked for `$` syntax (text.py)."""
        env = self.string_table(table, "env", step)
        for name, value in env.items():
            message = env_syntax_problem(value)
            if message is not None:
                self.problem(f"value of {name!r}: {message}", step, "env")
        return env


def _in_range(key: str) -> Check[int]:
    low, high = LIMITS[key]
    return lambda v: None if low <= v <= high else f"must be from {low} to {high}, got {show(v)}"


def _no_nul(v: str) -> str | None:
    return "contains a NUL character" if "\0" in v else None


def _executor_problem(v: str) -> str | None:
    if EXECUTOR_RE.match(v):
        return None
    return f"{show(v)} is not an executor name (letters, digits, '_', '-')"


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
    raw_command = r.get(raw, "command", (str, list), default=None, step=step_id)
    command: str | tuple[str, ...] | None = None
    if isinstance(raw_command, list):
        if not raw_command or not all(isinstance(a, str) for a in raw_command):
            r.problem("an argv list must be a non-empty list of strings", step_id, "command")
        elif any("\0" in a for a in raw_command):
            r.problem("contains a NUL character", step_id, "command")
        else:
            command = tuple(raw_command)
    elif isinstance(raw_command, str):
        if not raw_command.strip():
            r.problem("must not be empty", step_id, "command")
        elif "\0" in raw_command:
            r.problem("contains a NUL character", step_id, "command")
        command = raw_command
    call = r.get(
        raw,
        "call",
        str,
        default=None,
        step=step_id,
        check=lambda v: (
            None if CALL_RE.match(v) else f"{show(v)} must look like 'package.module:function'"
        ),
    )
    if ("command" in raw) == ("call" in raw):
        r.problem("a step needs exactly one of 'command' or 'call'", step_id)
    deps = r.get(raw, "depends_on", (list, str), default=[], step=step_id)
    if isinstance(deps, str):
        deps = [deps]
    if not all(isinstance(d, str) for d in deps):
        r.problem("must be a list of step ids", step_id, "depends_on")
        deps = []
    rule = r.get(
        raw,
        "trigger_rule",
        str,
        default="all_success",
        step=step_id,
        check=lambda v: (
            None
            if v in TriggerRule.__members__.values()
            else f"unknown trigger rule {show(v)}{_suggest(v, list(map(str, TriggerRule)))}; "
            f"choose from {', '.join(TriggerRule)}"
        ),
    )
    backoff = r.get(raw, "retry_backoff", (int, float), default=2.0, step=step_id)
    low, high = BACKOFF_RANGE
    if isinstance(backoff, bool) or not low <= backoff <= high:  # also NaN
        r.problem(
            f"must be a number from {low:g} to {high:g}, got {show(backoff)}",
            step_id,
            "retry_backoff",
        )
        backoff = 2.0
    timeout = r.duration(raw, "timeout", default=None, step=step_id)
    if timeout == 0:
        r.problem("must be greater than 0 (leave it out for no timeout)", step_id, "timeout")
    step_env = r.env_table(raw, step_id)
    return StepSpec(
        id=step_id,
        command=command,
        call=call,
        depends_on=tuple(dict.fromkeys(deps)),
        retries=r.get(raw, "retries", int, default=0, step=step_id, check=_in_range("retries")),
        retry_delay=r.duration(raw, "retry_delay", default=0.0, step=step_id),
        retry_backoff=float(backoff),
        max_retry_delay=r.duration(raw, "max_retry_delay", default=None, step=step_id),
        timeout=timeout or None,
        env={**dag_env, **step_env},
        # Expansion order (environment.py): the DAG's entries, then the step's.
        env_order=(*dag_env.items(), *step_env.items()),
        cwd=r.get(raw, "cwd", str, default=None, step=step_id, check=_no_nul),
        trigger_rule=TriggerRule(rule),
        description=r.get(raw, "description", str, default="", step=step_id),
        executor=r.get(
            raw, "executor", str, default=dag_executor, step=step_id, check=_executor_problem
        ),
    )


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
    dag_id = r.get(doc, "id", str, default=default_id)
    if dag_id is None:
        r.problem("missing 'id'", field="id")
    elif not ID_RE.match(dag_id):
        r.problem(f"{show(dag_id)} is not a valid id (letters, digits, '_', '-', '.')", field="id")
    schedule = r.get(doc, "schedule", str, default=None, check=cron_problem)
    tz = r.get(doc, "timezone", str, default="UTC", check=timezone_problem)
    dag_env = r.env_table(doc)
    dag_executor = r.get(doc, "executor", str, default=DEFAULT_EXECUTOR, check=_executor_problem)
    raw_steps = r.get(doc, "steps", dict, default={})
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
    max_active_steps = r.get(
        doc, "max_active_steps", int, default=None, check=_in_range("max_active_steps")
    )
    params = r.string_table(doc, "params")
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
        description=r.get(doc, "description", str, default=""),
        schedule=schedule,
        timezone=tz,
        catchup=r.get(doc, "catchup", bool, default=False),
        max_active_runs=r.get(
            doc, "max_active_runs", int, default=1, check=_in_range("max_active_runs")
        ),
        max_active_steps=max_active_steps,
        params=params,
        env=dag_env,
        tags=tuple(r.get(doc, "tags", list, default=[])),
        source=file,
    )
    if not all(isinstance(t, str) for t in dag.tags):
        r.problem("must be a list of strings", field="tags")
    if r.problems:
        raise DagSpecError(r.problems)
    return dag
