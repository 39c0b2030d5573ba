"""`dagd show` and `dagd graph`: what a run did and what a DAG is.

`dagd show RUN_ID` and `dagd show --dag DAG_ID` ask the running daemon (the protocol's
`get_run` and `get_dag`); `dagd graph DAG_ID` reads the DAG folder itself, as `dagd list`
does, so it works without a daemon.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import click

from dagd.cli.completion import complete_dag_ids, complete_run_ids
from dagd.cli.graphtext import FORMATS, render
from dagd.cli.options import (
    config_option,
    dags_option,
    endpoint,
    load_config,
    token_option,
    url_option,
)
from dagd.cli.output import json_option, print_json
from dagd.core.model import DagSpec, StepStatus, TriggerRule
from dagd.core.protocol.codes import ErrorCode
from dagd.core.runstate import format_seconds
from dagd.core.text import one_line
from dagd.core.text import show as show_text
from dagd.core.timefmt import iso_z

if TYPE_CHECKING:
    from dagd.cli.remote import Endpoint
    from dagd.core.protocol.answers import DagDetail, RunDetail, StepDefinition, StepDetail

# The client (trio-websocket) and the rich views are imported by the commands that use them:
# every `dagd` start, a shell completion's included, would pay about 140 ms for them.


def local_dag(config_path: Path | None, dags_dir: Path | None, dag_id: str) -> DagSpec:
    """`dag_id` as the DAG folder (from `--dags`, else the config's) defines it now, read as
    `dagd list` reads it (a step naming an executor the config lacks is a problem). Raises
    click.ClickException naming the file's problems when its file is broken, or the closest
    known ids when there is no such DAG."""
    from dagd.daemon.dagfolder import load_dag_folder  # imports trio: not on every Tab

    config = load_config(config_path)
    folder_path = dags_dir if dags_dir is not None else config.dags_dir
    folder = load_dag_folder(folder_path, executors=config.executor_names, pools=config.pools)
    dag = folder.dags.get(dag_id)
    if dag is not None:
        return dag
    bad = folder.problems.get(str(folder_path / f"{dag_id}.toml"))
    if bad:
        raise click.ClickException("\n".join(map(str, bad)))
    from dagd.cli.remote import unknown_dag

    raise unknown_dag(dag_id, folder.dags, str(folder_path))


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text: steps by level with their upstreams; mermaid or dot: source for those tools.",
)
@config_option
@dags_option
def graph(dag_id: str, fmt: str, config_path: Path | None, dags_dir: Path | None) -> None:
    """Draw DAG_ID's steps and dependencies, read from the DAG folder (no daemon needed).

    \b
    Examples:
      dagd graph etl                         steps by level, each with its upstreams
      dagd graph etl --format mermaid        a Mermaid flowchart for Markdown
      dagd graph etl --format dot | dot -Tsvg > etl.svg
    """
    click.echo(render(local_dag(config_path, dags_dir, dag_id), fmt), nl=False)


@click.command()
@click.argument("run_id", required=False, shell_complete=complete_run_ids)
@click.option(
    "--dag",
    "dag_id",
    metavar="DAG_ID",
    shell_complete=complete_dag_ids,
    help="Show this DAG's definition instead of a run.",
)
@click.option(
    "--attempts",
    "all_attempts",
    is_flag=True,
    help="List every attempt of every step (default: only of steps tried more than once).",
)
@json_option
@config_option
@url_option
@token_option
def show(
    run_id: str | None,
    dag_id: str | None,
    all_attempts: bool,
    as_json: bool,
    config_path: Path | None,
    url: str | None,
    token: str | None,
) -> None:
    """Show RUN_ID in detail, or with --dag a DAG's definition, as the running daemon has it.

    \b
    A run: its DAG, status, trigger, params, times and duration, then every step with its
    status, attempts, duration and error (and each attempt's start, duration and error when
    it was tried more than once, or with --attempts), then the steps' outputs.
    A DAG: schedule and time zone, next run, whether it is paused, params with their
    defaults, tags, and every step with its command or callable, executor and upstreams.

    \b
    Examples:
      dagd show manual__2024-05-05T10:00:00.123456+00:00
      dagd show --dag etl
      dagd show RUN_ID --json | jq '.steps[] | select(.status == "failed")'
    """
    if (run_id is None) == (dag_id is None):
        raise click.UsageError("give a RUN_ID, or --dag DAG_ID (not both)")
    from dagd.cli.remote import run_async

    where = endpoint(config_path, url, token)
    if run_id is not None:
        run = run_async(_get_run, where, run_id)
        if as_json:
            print_json(run)
        else:
            click.echo(run_text(run, all_attempts), nl=False)
    else:
        assert dag_id is not None
        dag = run_async(_get_dag, where, dag_id)
        if as_json:
            print_json(dag)
        else:
            click.echo(dag_text(dag), nl=False)


async def _get_run(where: Endpoint, run_id: str) -> RunDetail:
    from dagd.cli.remote import open_client
    from dagd.client import ClientError

    async with open_client(where, []) as client:
        try:
            run = await client.get_run(run_id)
        except ClientError as exc:
            if exc.code is ErrorCode.UNKNOWN_RUN:
                raise click.ClickException(
                    f"unknown run {show_text(run_id)}: the daemon has no such run (`dagd runs` "
                    "lists the latest)"
                ) from None
            raise
    return attrs.evolve(run, request_id=None)


async def _get_dag(where: Endpoint, dag_id: str) -> DagDetail:
    from dagd.cli.remote import open_client, unknown_dag
    from dagd.client import ClientError

    async with open_client(where, []) as client:
        try:
            dag = await client.get_dag(dag_id)
        except ClientError as exc:
            if exc.code is ErrorCode.UNKNOWN_DAG:
                known = [d.dag_id for d in await client.list_dags()]
                raise unknown_dag(dag_id, known) from None
            raise
    return attrs.evolve(dag, request_id=None)


# ------------------------------------------------------------------ text views


def _time(ts: float | None) -> str:
    return iso_z(ts) if ts is not None else "-"


def _fields(rows: list[tuple[str, str]]) -> list[str]:
    """`name  value` lines, the values aligned."""
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}".rstrip() for name, value in rows]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart, the header in capitals; never wrapped."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _attempt_count(step: StepDetail) -> int:
    """The attempts made: one waiting for a pool slot (pending, `waiting_for` set) is not."""
    count = max(step.attempt, len(step.attempts))
    if step.status is StepStatus.PENDING and step.waiting_for is not None and count:
        count -= 1
    return count


#: The longest output value `dagd show` prints, in characters (`--json` gives them whole).
MAX_SHOWN_OUTPUT = 200


def _output_value(value: object) -> str:
    """An output's value on one line, as JSON (a string quoted, a newline as \\n), cut
    after MAX_SHOWN_OUTPUT characters."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_SHOWN_OUTPUT:
        text = f"{text[:MAX_SHOWN_OUTPUT]}... ({len(text)} characters; --json shows it whole)"
    return one_line(text)


def run_text(run: RunDetail, all_attempts: bool = False) -> str:
    """A `get_run` answer for people: the run's fields, then a table of its steps (an
    attempt line under each step tried more than once, or under every step that ran with
    `all_attempts`, with where it ran when its executor says; what a step polling its
    wait_for waits for), the steps' outputs, and the `dagd logs` command for the first failed
    step's output. Times are UTC; outside text is shown with control
    characters escaped."""
    from dagd.cli.render import format_duration

    rec = run.record
    params = "  ".join(f"{one_line(k)}={one_line(v)}" for k, v in rec.params.items()) or "-"
    lines = _fields(
        [
            ("run", one_line(rec.run_id)),
            ("dag", one_line(rec.dag_id)),
            ("status", str(rec.status)),
            ("trigger", str(run.trigger) if run.trigger is not None else "-"),
            *([("parent run", one_line(rec.parent_run_id))] if rec.parent_run_id else []),
            *([("triggered by", one_line(rec.triggered_by))] if rec.triggered_by else []),
            ("params", params),
            ("queued", _time(rec.queued_at)),
            ("started", _time(rec.started_at)),
            ("ended", _time(rec.ended_at)),
            ("duration", format_duration(run.duration) or "-"),
            ("definition", run.dag_version[:12] if run.dag_version else "-"),
        ]
    )
    rows: list[tuple[str, ...]] = []
    for step in run.steps:
        count = _attempt_count(step)
        note = one_line(step.error) if step.error else ""
        if step.waiting_for is not None:
            note = f"waiting for: {one_line(step.waiting_for)}"
        rows.append(
            (
                one_line(step.step_id) + (" (handler)" if step.handler is not None else ""),
                str(step.status),
                str(count),
                _time(step.start_time),
                format_duration(step.duration) or "-",
                note,
            )
        )
        if all_attempts or count > 1:
            for attempt in step.attempts:
                error = one_line(attempt.error) if attempt.error else ""
                if attempt.worker:
                    error = f"(on {one_line(attempt.worker)}) {error}".rstrip()
                # An attempt recorded as `retrying` failed, and a retry followed (or is
                # waiting): its own outcome is the failure.
                status = (
                    StepStatus.FAILED if attempt.status is StepStatus.RETRYING else attempt.status
                )
                rows.append(
                    (
                        f"  attempt {attempt.attempt}",
                        str(status),
                        "",
                        _time(attempt.start_time),
                        format_duration(attempt.duration) or "-",
                        error,
                    )
                )
    header = ("STEP", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "ERROR")
    lines += ["", *_table(header, rows)]
    outputs = [
        f"  {one_line(step.step_id)}.{one_line(key)} = {_output_value(value)}"
        for step in run.steps
        for key, value in step.outputs.items()
    ]
    if outputs:
        lines += ["", "OUTPUTS", *outputs]
    failed = [step.step_id for step in run.steps if step.status is StepStatus.FAILED]
    failed.sort(key=lambda sid: sid.startswith("@"))  # a step's output before a handler's
    if failed:
        # shlex.quote: the line can be pasted into a shell as it is.
        words = ["dagd", "logs", shlex.quote(rec.run_id), shlex.quote(failed[0])]
        lines += ["", f"output of a failed step: {one_line(' '.join(words))}"]
    return "\n".join(lines) + "\n"


def _command_text(step: StepDefinition) -> tuple[str, str]:
    if step.notify:
        return "notify", ", ".join(one_line(url) for url in step.notify)
    if step.call is not None:
        return "call", one_line(step.call)
    if step.run is not None:
        given = ", ".join(
            f"{one_line(k)} = {json.dumps(v, ensure_ascii=False)}"
            for k, v in (step.run_params or {}).items()
        )
        return "run", one_line(step.run) + (f" (params: {given})" if given else "")
    if isinstance(step.command, list):
        return "command", one_line(shlex.join(step.command))
    return "command", step.command or ""


def dag_text(dag: DagDetail) -> str:
    """A `get_dag` answer for people: the DAG's fields and params, then each step with its
    upstreams, command (a multi-line script indented as written) or callable, executor, and
    the retries, timeout and trigger rule it sets. A DAG whose file is broken now lists the
    file's problems, one a line, after its fields."""
    summary = dag.summary
    if summary.paused:
        next_run = "- (paused: the schedule does not fire; manual triggers still run)"
    elif summary.schedule is None:
        next_run = "- (no schedule: runs only when triggered)"
    else:
        next_run = _time(summary.next_run)
    rows = [
        ("dag", one_line(summary.dag_id)),
        ("description", one_line(summary.description) or "-"),
        ("schedule", f"{summary.schedule} ({summary.timezone})" if summary.schedule else "-"),
        ("next run", next_run),
        ("paused", "yes" if summary.paused else "no"),
        ("catchup", "yes" if dag.catchup else "no"),
        ("max active runs", str(dag.max_active_runs)),
        ("max active steps", str(dag.max_active_steps or "-")),
        ("tags", ", ".join(one_line(t) for t in summary.tags) or "-"),
        ("after", ", ".join(one_line(d) for d in dag.after) or "-"),
    ]
    problems = summary.file_error.splitlines() if summary.file_error else []
    if problems:
        rows.append(("file error", "running the last good version of its file; now:"))
    lines = _fields(rows)
    lines += [f"  {one_line(problem)}" for problem in problems]
    lines += ["", "PARAMS (defaults)" if summary.params else "PARAMS  none"]
    lines += [
        f"  {one_line(k)} = {json.dumps(v, ensure_ascii=False)}" for k, v in summary.params.items()
    ]
    lines += ["", f"STEPS ({len(dag.steps)})"]
    for step in dag.steps:
        ups = f"  <- {', '.join(one_line(u) for u in step.depends_on)}" if step.depends_on else ""
        lines.append(f"{one_line(step.step_id)}{ups}")
        lines += _step_lines(step)
    if dag.handlers:
        lines += ["", f"HANDLERS ({len(dag.handlers)}: after every step is final, in this order)"]
    for step in dag.handlers:
        lines.append(one_line(step.step_id))
        lines += _step_lines(step)
    return "\n".join(lines) + "\n"


def _step_lines(step: StepDefinition) -> list[str]:
    """A step's description, command and settings, indented under its id."""
    lines: list[str] = []
    if step.description:
        lines.append(f"  description: {one_line(step.description)}")
    kind, text = _command_text(step)
    body = text.strip("\n").split("\n")
    lines.append(f"  {kind}: {one_line(body[0])}")
    lines += [f"  {' ' * len(kind)}  {one_line(more)}" for more in body[1:]]
    if step.precondition is not None:
        lines.append(f"  precondition: {one_line(step.precondition)}")
    if step.wait_for is not None:
        lines.append(f"  wait for: {one_line(step.wait_for)}")
    extras = [f"executor {one_line(step.executor)}"]
    if step.retries:
        extras.append(f"retries {step.retries} (delay {format_seconds(step.retry_delay)})")
    if step.timeout is not None:
        extras.append(f"timeout {format_seconds(step.timeout)}")
    if step.trigger_rule is not TriggerRule.ALL_SUCCESS and step.handler is None:
        extras.append(f"trigger rule {step.trigger_rule}")
    lines.append("  " + ", ".join(extras))
    return lines


#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = [show, graph]
