"""Operating a DAG on the running daemon: `dagd pause`, `dagd unpause`, `dagd backfill`, and
`dagd schema` (the DAG file format as JSON Schema).

Pause, unpause and backfill are protocol requests (an `operate` token); the daemon keeps a
pause in its store, so it survives restarts and edits of the DAG file.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import attrs
import click

from dagd.cli.completion import complete_dag_ids
from dagd.cli.options import (
    config_option,
    endpoint,
    params_option,
    parse_params,
    token_option,
    url_option,
)
from dagd.cli.output import json_option, print_json
from dagd.core.protocol.codes import ErrorCode
from dagd.core.text import one_line
from dagd.core.timefmt import iso_z

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from dagd.cli.remote import Endpoint
    from dagd.client import Client
    from dagd.core.protocol.answers import BackfillResult, Paused, Unpaused

#: The answer of one request: Paused, Unpaused or BackfillResult.
Answer = TypeVar("Answer", "Paused", "Unpaused", "BackfillResult")


async def _ask(
    where: Endpoint, dag_id: str, request: Callable[[Client], Awaitable[Answer]]
) -> Answer:
    """One request about `dag_id`; its answer without the request id. An unknown DAG is the
    did-you-mean error; other refusals become the daemon's message (remote.run_async). The
    client is imported here, not at the top: every `dagd` start would pay for it."""
    from dagd.cli.remote import open_client, unknown_dag
    from dagd.client import ClientError

    async with open_client(where, []) as client:
        try:
            answer = await request(client)
        except ClientError as exc:
            if exc.code is ErrorCode.UNKNOWN_DAG:
                raise unknown_dag(dag_id, [d.dag_id for d in await client.list_dags()]) from None
            raise
    return attrs.evolve(answer, request_id=None)


def _send(
    config_path: Path | None,
    url: str | None,
    token: str | None,
    dag_id: str,
    request: Callable[[Client], Awaitable[Answer]],
) -> Answer:
    from dagd.cli.remote import run_async

    answer: Answer = run_async(_ask, endpoint(config_path, url, token), dag_id, request)
    return answer


def _daemon_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in (token_option, url_option, config_option, json_option):
        fn = option(fn)
    return fn


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@_daemon_options
def pause(
    dag_id: str, as_json: bool, config_path: Path | None, url: str | None, token: str | None
) -> None:
    """Stop DAG_ID's schedule from firing until `dagd unpause`.

    Manual triggers and backfills still run. The daemon keeps the pause across restarts and
    edits of the DAG file; `dagd dags` shows it. Pausing a paused DAG is no error.
    """
    answer = _send(config_path, url, token, dag_id, lambda c: c.pause(dag_id))
    if as_json:
        print_json(answer)
        return
    name = one_line(dag_id)
    click.echo(
        f"paused {name}: its schedule does not fire until `dagd unpause {name}`; "
        "manual triggers and backfills still run"
    )


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@_daemon_options
def unpause(
    dag_id: str, as_json: bool, config_path: Path | None, url: str | None, token: str | None
) -> None:
    """Let DAG_ID's schedule fire again.

    The slots missed while it was paused are treated as after downtime: with `catchup = true`
    each of them runs, oldest first; otherwise only the latest one does.
    """
    answer = _send(config_path, url, token, dag_id, lambda c: c.unpause(dag_id))
    if as_json:
        print_json(answer)
        return
    name = one_line(dag_id)
    if answer.next_run is None:
        click.echo(f"unpaused {name} (it has no schedule: it runs when triggered)")
    else:
        click.echo(f"unpaused {name}: its schedule fires again; next run {iso_z(answer.next_run)}")


def _readable_bound(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A malformed --start/--end is a usage error (exit 2) here, as the text was typed; the
    daemon reads it in the DAG's time zone, which only the daemon knows."""
    from dagd.core.backfill import RangeError, parse_bound

    try:
        parse_bound(value, "UTC", end=param.name == "end")
    except RangeError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_order(start: str, end: str) -> None:
    """Refuse --end before --start (click.UsageError, exit 2), quoting them as typed. The
    daemon reads dates without an offset in the DAG's time zone, which only it knows; read in
    any one zone their order is the same, so UTC decides it here. When one has an offset and
    the other not, the order depends on that zone: the daemon judges it."""
    from dagd.core.backfill import parse_bound

    def read(text: str, *, end: bool) -> tuple[datetime, bool]:
        moment = parse_bound(text, "UTC", end=end)
        # A text with an offset names the same moment in any zone.
        return moment, moment == parse_bound(text, "Etc/GMT+12", end=end)

    first, first_fixed = read(start, end=False)
    last, last_fixed = read(end, end=True)
    if first_fixed == last_fixed and last < first:
        raise click.UsageError(f"--end {end!r} is before --start {start!r}")


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option(
    "--start",
    required=True,
    metavar="DATE",
    callback=_readable_bound,
    help="First day (2024-01-01) or date and time.",
)
@click.option(
    "--end",
    required=True,
    metavar="DATE",
    callback=_readable_bound,
    help="Last day (included whole) or date and time.",
)
@params_option
@click.option("--rerun", is_flag=True, help="Run slots whose run succeeded again too.")
@click.option("--dry-run", is_flag=True, help="List the slots and what would be done; queue none.")
@_daemon_options
def backfill(
    dag_id: str,
    start: str,
    end: str,
    params: tuple[str, ...],
    rerun: bool,
    dry_run: bool,
    as_json: bool,
    config_path: Path | None,
    url: str | None,
    token: str | None,
) -> None:
    """Run DAG_ID for every schedule slot from --start to --end, oldest first.

    \b
    Dates and times without an offset are read in the DAG's time zone; a date as --end
    counts its whole day. Each slot's run has the id the scheduler gives that slot, so a
    backfilled slot and a scheduled one never run twice. The runs go through the same queue
    and max_active_runs as any other. A slot whose run succeeded is skipped unless --rerun;
    one whose run failed or was cancelled is retried (its successful steps are kept). Slots
    still to come are the scheduler's: the range stops at now.

    \b
    Examples:
      dagd backfill etl --start 2024-01-01 --end 2024-01-31 --dry-run
      dagd backfill etl --start 2024-01-01 --end 2024-01-31 -p env=staging
    """
    _check_order(start, end)
    given = parse_params(params)
    answer = _send(
        config_path,
        url,
        token,
        dag_id,
        lambda c: c.backfill(dag_id, start, end, given, rerun=rerun, dry_run=dry_run),
    )
    if as_json:
        print_json(answer)
        return
    click.echo(backfill_text(answer), nl=False)


#: A dry run's actions (BackfillAction values), said as what the backfill would do.
_WOULD = {
    "queued": "would queue",
    "retried": "would retry",
    "rerun": "would rerun",
    "skipped": "would skip",
}


def _would(action: str) -> str:
    return _WOULD.get(str(action), f"would {action}")


def backfill_text(result: BackfillResult) -> str:
    """A backfill answer for people: a summary line (how many slots, what was done to them),
    then one line per slot, oldest first: its time (UTC), the action, the run id, and why it
    was skipped."""
    name = one_line(result.dag_id)
    if not result.slots:
        return f"backfill {name}: no schedule slot in that range\n"
    noun = "slot" if len(result.slots) == 1 else "slots"
    if result.dry_run:
        # Nothing was done: each action is what would be ("would queue"), not a past tense.
        counts = Counter(_would(slot.action) for slot in result.slots)
        done = ", ".join(f"{action} {n}" for action, n in counts.items())
        head = f"dry run of backfill {name}: {len(result.slots)} {noun}, nothing queued ({done})"
    else:
        counts = Counter(str(slot.action) for slot in result.slots)
        done = ", ".join(f"{n} {action}" for action, n in counts.items())
        head = f"backfill {name}: {len(result.slots)} {noun} ({done})"
    rows = [("SLOT (UTC)", "ACTION", "RUN", "REASON")]
    rows += [
        (
            iso_z(s.slot),
            _would(s.action) if result.dry_run else str(s.action),
            one_line(s.run_id),
            one_line(s.reason or ""),
        )
        for s in result.slots
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([head, "", *lines]) + "\n"


@click.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of the DAG file format.

    Generated from the definitions the DAG loader reads files by. Point an editor at it for
    completion and checks while typing (docs/dags.md shows how with taplo / Even Better
    TOML); `dagd validate` still has the last word.

    \b
    Example:
      dagd schema > dag.schema.json
    """
    from dagd.core.dagschema import dag_json_schema

    click.echo(json.dumps(dag_json_schema(), indent=2, ensure_ascii=False))


#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = [pause, unpause, backfill, schema]
