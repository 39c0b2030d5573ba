"""The CLI's side of the daemon: finding it, and the commands that talk to it over WebSocket
(`dagd logs` reads the log folder and the run history directly).

The URL and token come from, in order: `--url`/`--token`, `DAGD_URL`/`DAGD_TOKEN`, then the
config file (its server address; a configured literal or environment token, else the token the
daemon generated into its state folder). On one machine every command works with no flags.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import click
import trio

from dagd.client import (
    AuthFailed,
    Client,
    ClientError,
    Connected,
    ConnectionLost,
    GapRepaired,
    connect,
)
from dagd.core.config import Config
from dagd.core.events import DagRunStatusEvent, ErrorEvent
from dagd.core.model import FINISHED_RUN, RunStatus
from dagd.core.protocol.codes import ErrorCode
from dagd.core.timefmt import iso_z

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_CANCELLED = 130


@attrs.frozen
class Endpoint:
    """Where a client command connects: the WebSocket `url`, the `token`, and where the token
    came from (`token_source`, said in errors so a wrong one can be found)."""

    url: str
    token: str
    token_source: str


def resolve_endpoint(config: Config, url: str | None, token: str | None) -> Endpoint:
    """The endpoint of the daemon `config` describes. The URL: `url`, else $DAGD_URL, else
    the config's (0.0.0.0 read as 127.0.0.1). The token, first found: `token`, $DAGD_TOKEN,
    an `operate` token of the config (inline or from its environment variable), the token
    file in the state folder. Raises click.ClickException when none is found."""
    url = url or os.environ.get("DAGD_URL") or config.url.replace("0.0.0.0", "127.0.0.1")
    if token:
        return Endpoint(url, token, "--token")
    if os.environ.get("DAGD_TOKEN"):
        return Endpoint(url, os.environ["DAGD_TOKEN"], "DAGD_TOKEN")
    for spec in config.tokens:
        if spec.role == "operate" and spec.token:
            return Endpoint(url, spec.token, f"config token {spec.name or 'operate'}")
        if spec.role == "operate" and spec.env and os.environ.get(spec.env):
            return Endpoint(url, os.environ[spec.env], f"${spec.env}")
    try:
        return Endpoint(url, config.token_file.read_text().strip(), str(config.token_file))
    except OSError:
        raise click.ClickException(
            f"no token file at {config.token_file}: has the daemon been started with this "
            "config? Start it with `dagd serve --config config.toml`, or pass --token or set "
            "DAGD_TOKEN"
        ) from None


def _unreachable(endpoint: Endpoint, why: str) -> click.ClickException:
    return click.ClickException(
        f"cannot reach the daemon at {endpoint.url} ({why}).\n"
        "Is it running? Start it with: dagd serve --config config.toml"
    )


@asynccontextmanager
async def open_client(
    endpoint: Endpoint, dag_ids: list[str], *, retry_first: bool = False, **kwargs: Any
) -> AsyncIterator[Client]:
    """A connected client; fails fast (unless `retry_first`) if the daemon is not there."""
    async with connect(endpoint.url, endpoint.token, dag_ids or ["*"], **kwargs) as client:
        if not retry_first:
            first = await _first_item(client)
            if isinstance(first, ConnectionLost):
                raise _unreachable(endpoint, first.message)
        yield client


async def _first_item(client: Client) -> object:
    try:
        async for item in client:
            return item
    except AuthFailed:
        raise click.ClickException(
            "the daemon refused the token (wrong --token, DAGD_TOKEN or token file?)"
        ) from None
    return None


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """trio.run with the errors a user should see turned into clean messages."""
    try:
        return trio.run(fn, *args)
    except ClientError as exc:
        raise click.ClickException(
            exc.message if exc.code is not ErrorCode.AUTH_FAILED else "the daemon refused the token"
        ) from None


# ------------------------------------------------------------------ commands


async def list_dags(endpoint: Endpoint) -> None:
    """`dagd dags`: one line per loaded DAG (id, schedule, next run, steps, description)."""
    async with open_client(endpoint, []) as client:
        dags = await client.list_dags()
    for dag in dags:
        next_run = iso_z(dag.next_run) if dag.next_run is not None else "-"
        click.echo(
            f"{dag.dag_id:<24} {dag.schedule or 'manual':<16} "
            f"next: {next_run:<26} {len(dag.steps):>4} steps  "
            f"{dag.description}"
        )


async def list_runs(endpoint: Endpoint, dag_id: str | None, limit: int) -> None:
    """`dagd runs`: the newest `limit` runs (of `dag_id`, or of all), one line each."""
    async with open_client(endpoint, []) as client:
        runs = await client.list_runs(dag_id, limit)
    if not runs:
        click.echo("no runs yet")
    for run in runs:
        since = run.started_at if run.started_at is not None else run.queued_at
        click.echo(f"{run.status:<10} {run.dag_id:<20} {run.run_id:<50} {iso_z(since)}")


async def control(endpoint: Endpoint, action: str, run_id: str) -> None:
    """`dagd cancel` / `dagd retry` (`action` "cancel" or "retry"). Raises ClientError with
    the daemon's code (unknown_run, not_running, not_finished, not_retryable, ...)."""
    async with open_client(endpoint, []) as client:
        await (client.cancel(run_id) if action == "cancel" else client.retry(run_id))
    click.echo(f"{action} accepted: {run_id}")


async def trigger(
    endpoint: Endpoint, dag_id: str, params: dict[str, str], wait: bool, live: bool
) -> int:
    """`dagd trigger`: start a run; with `wait`, follow it and return its exit code (0
    success, else the failed or cancelled code), else 0 once it is queued."""
    async with open_client(endpoint, [dag_id]) as client:
        run_id = await client.trigger(dag_id, params)
        click.echo(f"triggered {dag_id}: {run_id}", err=wait)
        if not wait:
            return 0
        return await follow(client, {run_id}, live, stop_when_done=True)


async def watch(endpoint: Endpoint, dag_ids: list[str], live: bool) -> int:
    """`dagd watch`: follow the runs of `dag_ids` (["*"]: all) until interrupted, from a
    snapshot of where they are now."""
    async with open_client(endpoint, dag_ids, retry_first=True, initial_snapshot=True) as client:
        return await follow(client, None, live, stop_when_done=False)


async def follow(client: Client, run_ids: set[str] | None, live: bool, stop_when_done: bool) -> int:
    """Show events (live view or plain lines) until the runs end (or forever, for watch)."""
    from rich.console import Console
    from rich.live import Live

    from dagd.cli.render import RunsView

    console = Console()
    view = RunsView()

    def show_line(text: str | None, style: str | None = None) -> None:
        if text and not live:
            console.print(text, style=style, highlight=False, markup=False)

    async def consume(display: Live | None) -> int:
        async for item in client:
            if isinstance(item, ConnectionLost):
                view.notice = f"disconnected ({item.message}), retrying in {item.retry_in:.0f} s"
                show_line(view.notice)
            elif isinstance(item, Connected):
                if view.notice:
                    show_line("reconnected; catching up")
                view.notice = None
            elif isinstance(item, GapRepaired):
                for event in item.events:
                    if run_ids is None or getattr(event, "run_id", None) in run_ids:
                        view.apply(event)
                if item.events and run_ids is not None:
                    show_line("missed events were no longer available: showing current state")
                if stop_when_done and run_ids is not None:
                    for run_id in run_ids:  # the run may have ended while we were away
                        run = view.runs.get(run_id)
                        if run is not None and run.status in FINISHED_RUN:
                            return _exit_code(run.status)
            elif (
                run_ids is None
                or getattr(item, "run_id", None) in run_ids
                or (isinstance(item, ErrorEvent) and item.run_id is None)
            ):
                view.apply(item)
                show_line(view.line(item))
                if (
                    stop_when_done
                    and isinstance(item, DagRunStatusEvent)
                    and run_ids is not None
                    and item.run_id in run_ids
                    and item.status.finished
                ):
                    return _exit_code(item.status)
            if display is not None:
                display.update(view.render())
        return 0

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupt() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(interrupt)
            code = EXIT_CANCELLED
            if live:
                with Live(view.render(), console=console, transient=False) as display:
                    code = await consume(display)
            else:
                code = await consume(None)
            nursery.cancel_scope.cancel()
    for run in view.runs.values():
        if run_ids is not None and run.run_id in run_ids:
            view.summary(run, console)
    return code


def _exit_code(run_status: RunStatus) -> int:
    if run_status is RunStatus.SUCCESS:
        return 0
    return EXIT_CANCELLED if run_status is RunStatus.CANCELLED else EXIT_FAILED
