"""A run's outcome as its lifecycle handlers see it: the values, their environment variables,
the JSON document, the notification title and body, and notification URLs made safe to show.

A handler (`[handlers.on_failure]`, ...; docs/dags.md) runs once every ordinary step of its run
is final. What it is told:

- a shell handler, in its environment: `DAGD_RUN_STATUS` (success, failed or cancelled: the
  status the run ends with), `DAGD_FAILED_STEPS` (the ids of the steps that failed, in DAG
  order, separated by spaces, at most `MAX_LISTED`), `DAGD_RUN_OUTCOME` (`outcome_json`: the
  same and every failed step's error);
- a Python handler, `ctx.outcome`, a `RunOutcome`;
- a notification, a title and a body made from templates (`render`), where `{dag}`,
  `{run_id}`, `{status}`, `{duration}`, `{failed_steps}`, `{errors}` and `{params}` stand
  for the run's values (`TEMPLATE_FIELDS`) and `{{` / `}}` for braces.

Notification URLs hold secrets (tokens, passwords): `redact_url` keeps a URL's scheme, and its
host only for the schemes where the host is a server's name, never user, password, path or
query. Every message dagd makes about a URL goes through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import attrs

from dagd.core.model import RunStatus, StepStatus

#: At most this many failed steps are listed in DAGD_FAILED_STEPS, the JSON document and a
#: notification's body (DAGD_FAILED_COUNT and `failed_count` give the whole number).
MAX_LISTED = 100
#: Each error is cut to this many characters in the JSON document and a notification.
MAX_ERROR = 1000


@attrs.frozen
class FailedStep:
    """A step of the run that failed: its id, its status (`failed`) and its error text."""

    step_id: str
    status: StepStatus
    error: str | None


@attrs.frozen
class RunOutcome:
    """How a run ended, for its handlers: `status` is the status the run ends with (decided
    by its ordinary steps; handlers never change it), `started_at` and `finished_at` are UNIX
    seconds (the run's start, and when its last ordinary step became final), `failed` the
    failed steps in DAG order (at most MAX_LISTED; `failed_count` counts them all)."""

    dag_id: str
    run_id: str
    status: RunStatus
    params: Mapping[str, str]
    started_at: float | None
    finished_at: float
    failed: tuple[FailedStep, ...] = ()
    failed_count: int = 0

    @property
    def duration(self) -> float:
        """Seconds from the run's start to its last ordinary step's end (0 if it never
        started)."""
        return max(0.0, self.finished_at - (self.started_at or self.finished_at))


def outcome_json(outcome: RunOutcome) -> str:
    """The outcome as compact JSON text: `{"dagId", "runId", "status", "duration" (seconds),
    "failedCount", "failedSteps": [{"stepId", "status", "error"}]}` (errors cut to MAX_ERROR
    characters)."""
    return json.dumps(
        {
            "dagId": outcome.dag_id,
            "runId": outcome.run_id,
            "status": outcome.status.value,
            "duration": round(outcome.duration, 3),
            "failedCount": outcome.failed_count,
            "failedSteps": [
                {"stepId": f.step_id, "status": f.status.value, "error": _cut(f.error)}
                for f in outcome.failed
            ],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def outcome_env(outcome: RunOutcome) -> dict[str, str]:
    """The variables a shell handler gets: DAGD_RUN_STATUS, DAGD_FAILED_STEPS (space
    separated), DAGD_FAILED_COUNT and DAGD_RUN_OUTCOME (`outcome_json`)."""
    return {
        "DAGD_RUN_STATUS": outcome.status.value,
        "DAGD_FAILED_STEPS": " ".join(f.step_id for f in outcome.failed),
        "DAGD_FAILED_COUNT": str(outcome.failed_count),
        "DAGD_RUN_OUTCOME": outcome_json(outcome),
    }


def _cut(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR:
        return error
    return error[: MAX_ERROR - 3] + "..."


def format_duration(seconds: float) -> str:
    """0.034 -> '34ms', 12.3 -> '12.3s', 75 -> '1m15s', 3725 -> '1h2m5s'. Under a second in
    milliseconds: a run of quick steps would otherwise read '0.0s'."""
    if seconds < 0.9995:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


# ------------------------------------------------------------------------ templates

#: What each `{name}` of a notification's title or body stands for.
TEMPLATE_FIELDS: Mapping[str, str] = {
    "dag": "the DAG's id",
    "run_id": "the run's id",
    "status": "success, failed or cancelled",
    "duration": "from the run's start to its last step's end, e.g. 1m15s",
    "failed_steps": "the failed steps' ids, comma separated (none: empty)",
    "errors": "one line per failed step: '<step>: <error>'",
    "params": "the run's params, 'name=value' comma separated",
}
#: The title and body of a notification whose handler gives none.
DEFAULT_TITLE = "dagd: {dag} {status}"
DEFAULT_BODY = "Run {run_id} of DAG {dag}: {status} after {duration}.\n{errors}"

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_problem(text: str) -> str | None:
    """Why `text` is not a title or body template (an unknown `{name}`, a lone brace), or
    None."""
    for match in _FIELD.finditer(text):
        token = match[0]
        if token in ("{{", "}}"):
            continue
        name = match[1]
        if name is None:
            return f"a lone {token!r} at character {match.start() + 1} (write '{token * 2}')"
        if name not in TEMPLATE_FIELDS:
            known = ", ".join(f"{{{n}}}" for n in TEMPLATE_FIELDS)
            return f"unknown field {{{name}}} (fields: {known})"
    return None


def template_values(outcome: RunOutcome) -> dict[str, str]:
    """The value of each TEMPLATE_FIELDS name for `outcome`."""
    errors = [f"{f.step_id}: {_cut(f.error) or f.status.value}" for f in outcome.failed]
    if outcome.failed_count > len(outcome.failed):
        errors.append(f"... and {outcome.failed_count - len(outcome.failed)} more failed steps")
    return {
        "dag": outcome.dag_id,
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "duration": format_duration(outcome.duration),
        "failed_steps": ", ".join(f.step_id for f in outcome.failed),
        "errors": "\n".join(errors),
        "params": ", ".join(f"{k}={v}" for k, v in outcome.params.items()),
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{name}` replaced by `values[name]` and `{{`, `}}` by one brace;
    values are pasted as they are (never read as templates). `template` must have passed
    `template_problem`; anything it would refuse stays as written."""

    def replace(match: re.Match[str]) -> str:
        token = match[0]
        if token in ("{{", "}}"):
            return token[0]
        name = match[1]
        return values.get(name, token) if name is not None else token

    return _FIELD.sub(replace, template)


def notification(
    outcome: RunOutcome, title: str | None = None, body: str | None = None
) -> tuple[str, str]:
    """(title, body) of a notification about `outcome`, from the handler's templates (None:
    DEFAULT_TITLE, DEFAULT_BODY); the body's trailing blank lines are dropped."""
    values = template_values(outcome)
    text = render(DEFAULT_BODY if body is None else body, values).rstrip()
    return render(DEFAULT_TITLE if title is None else title, values), text


# ---------------------------------------------------------------------------- URLs

#: Apprise schemes whose host part names a server (not a token): `redact_url` shows it.
HOST_SCHEMES = frozenset(
    {
        "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos",
        "ntfy", "ntfys", "gotify", "gotifys", "mqtt", "mqtts", "apprise", "apprises",
        "matrix", "matrixs", "rocket", "rockets", "mmost", "mmosts",
    }
)  # fmt: skip
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)")


def redact_url(url: str) -> str:
    """A notification URL as dagd shows it anywhere (errors, logs, `dagd show`): its scheme,
    plus `host[:port]` for HOST_SCHEMES, never a user, password, token, path or query
    (`json://127.0.0.1:8080/...`, `slack://...`). Text that is not a URL is `<not a URL>`."""
    match = _URL.match(url.strip())
    if match is None:
        return "<not a URL>"
    scheme = match[1].lower()
    if scheme not in HOST_SCHEMES:
        return f"{scheme}://..."
    host = match[2].rpartition("@")[2]
    if "$" in host:  # written as a variable: its value may be anything
        return f"{scheme}://..."
    return f"{scheme}://{host}/..."


__all__ = [
    "DEFAULT_BODY",
    "DEFAULT_TITLE",
    "MAX_LISTED",
    "TEMPLATE_FIELDS",
    "FailedStep",
    "RunOutcome",
    "notification",
    "outcome_env",
    "outcome_json",
    "redact_url",
    "render",
    "template_problem",
    "template_values",
]
