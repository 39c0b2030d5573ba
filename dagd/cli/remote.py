"""The CLI's side of the daemon: finding it, and the commands that talk to it over WebSocket.

The URL and token come from, in order: `--url`/`--token`, `DAGD_URL`/`DAGD_TOKEN`, then the
config file (its server address; a configured literal or environment token, else the token the
daemon generated into its state folder). On one machine every command works with no flags;
see dagd/cli/options.py for where the config file is looked for.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import click
import trio

from dagd.cli.exitcodes import EXIT_CANCELLED, EXIT_OK, exit_code_of
from dagd.cli.output import make_console, print_json
from dagd.client import (
    AuthFailed,
    Client,
    ClientError,
    Connected,
    ConnectionLost,
    GapRepaired,
    NotConnected,
    connect,
)
from dagd.core.config import Config
from dagd.core.events import DagRunStatusEvent, ErrorEvent
from dagd.core.exceptiongroups import unwrap_single
from dagd.core.model import FINISHED_RUN
from dagd.core.protocol.answers import (
    BrokenFile,
    CancelAccepted,
    DagList,
    DagSummary,
    PoolList,
    RetryAccepted,
    RunList,
    Triggered,
)
from dagd.core.protocol.codes import ErrorCode
from dagd.core.protocol.requests import ListDags
from dagd.core.text import one_line
from dagd.core.timefmt import iso_z

T = TypeVar("T")

#: The path of dagd's WebSocket endpoint (the daemon serves nothing else).
ENDPOINT_PATH = "/api/v1/ws"
#: Reconnect backoff cap of interactive views (`watch`, `trigger --wait`), in seconds: a
#: person waiting for a restarted daemon; the client library keeps the protocol's 30 s.
INTERACTIVE_MAX_BACKOFF = 5.0


@attrs.frozen
class Endpoint:
    """Where a client command connects: the WebSocket `url`, the `token`, and where the token
    came from (`token_source`, said in errors so a wrong one can be found)."""

    url: str
    token: str
    token_source: str


def check_url(url: str) -> None:
    """Refuse a URL the client cannot use, saying what to use instead: an http(s) URL (dagd
    speaks WebSocket), another scheme, or no host. Raises click.ClickException."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        scheme = "wss" if parts.scheme == "https" else "ws"
        raise click.ClickException(
            f"{url} is an {parts.scheme}:// URL; dagd's endpoint is a WebSocket: use "
            f"{scheme}://HOST:PORT{ENDPOINT_PATH} (here: "
            f"{scheme}://{parts.netloc or 'HOST:PORT'}{ENDPOINT_PATH})"
        )
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise click.ClickException(
            f"{url!r} is not a WebSocket URL: use ws://HOST:PORT{ENDPOINT_PATH}"
        )
    try:
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", or not a number
        raise click.UsageError(f"{url}: {str(exc)[:1].lower()}{str(exc)[1:]}") from None
    if port == 0:
        raise click.UsageError(f"{url}: port out of range 1-65535")


def resolve_endpoint(config: Config, url: str | None, token: str | None) -> Endpoint:
    """The endpoint of the daemon `config` describes. The URL: `url`, else $DAGD_URL, else
    the config's (0.0.0.0 read as 127.0.0.1). The token, first found: `token`, $DAGD_TOKEN,
    an `operate` token of the config (inline or from its environment variable), the token
    file in the state folder. Raises click.ClickException for a URL that is not ws:// or
    wss://, and when no token is found."""
    url = url or os.environ.get("DAGD_URL") or config.url.replace("0.0.0.0", "127.0.0.1")
    check_url(url)
    if token:
        # click fills --token from DAGD_TOKEN too: say which one the user has to correct.
        ctx = click.get_current_context(silent=True)
        from_env = (
            ctx is not None
            and ctx.get_parameter_source("token") is click.core.ParameterSource.ENVIRONMENT
        )
        source = "the DAGD_TOKEN environment variable" if from_env else "the --token option"
        return Endpoint(url, token, source)
    if os.environ.get("DAGD_TOKEN"):
        return Endpoint(url, os.environ["DAGD_TOKEN"], "the DAGD_TOKEN environment variable")
    unset = []
    for i, spec in enumerate(config.tokens):
        if spec.role != "operate":
            continue
        entry = f"[[auth.tokens]] entry {spec.name or i + 1!r} of {config.source}"
        if spec.token:
            return Endpoint(url, spec.token, f"the token of the {entry}")
        if spec.env and os.environ.get(spec.env):
            return Endpoint(url, os.environ[spec.env], f"${spec.env} (named by the {entry})")
        if spec.env:
            unset.append((spec.env, entry))
    if unset:
        # A daemon with configured tokens never accepts its token file: say what is missing.
        env, entry = unset[0]
        raise click.ClickException(
            f"environment variable {env} is not set (or empty) in this shell: the {entry} "
            f"takes the token from it. Set it, or pass --token / DAGD_TOKEN"
        )
    try:
        token_text = config.token_file.read_text().strip()
        return Endpoint(url, token_text, f"the token file {config.token_file}")
    except OSError:
        where = (
            f"the config {config.source}"
            if config.source is not None
            else "no config file (looked for --config, DAGD_CONFIG, ./config.toml, "
            "$XDG_CONFIG_HOME/dagd/config.toml)"
        )
        raise click.ClickException(
            f"no token file at {config.token_file} (from {where}): has the daemon been "
            "started with this config? Start it with `dagd serve --config config.toml`, or "
            "pass --config, or --token / DAGD_TOKEN"
        ) from None


def _unreachable(endpoint: Endpoint, lost: ConnectionLost) -> click.ClickException:
    path = urllib.parse.urlsplit(endpoint.url).path
    if lost.http_status == 404 or (lost.http_status is not None and path != ENDPOINT_PATH):
        # Something answered the handshake, so it is running: the path is what is wrong.
        return click.ClickException(
            f"{endpoint.url}: no dagd endpoint at path {path or '/'} ({lost.message}); "
            f"use ws://HOST:PORT{ENDPOINT_PATH}"
        )
    why = lost.message
    parts = urllib.parse.urlsplit(endpoint.url)
    if parts.scheme == "wss" and not why.startswith("cannot connect"):
        # Something listens there but no TLS came back: most often a daemon serving ws://.
        plain = urllib.parse.urlunsplit(("ws", *parts[1:]))
        if not why.startswith("the TLS handshake failed"):
            why = f"the TLS handshake failed: {why}"
        return click.ClickException(
            f"cannot reach the daemon at {endpoint.url} ({why}).\n"
            f"Is the daemon serving TLS ([server] tls_cert)? If not, use {plain}"
        )
    return click.ClickException(
        f"cannot reach the daemon at {endpoint.url} ({why}).\n"
        "Is it running? Start it with: dagd serve --config config.toml"
    )


def unknown_dag(dag_id: str, known: Iterable[str], where: str = "") -> click.ClickException:
    """The error for a DAG id the daemon (or the DAG folder `where`) does not know: the
    closest ids it does know (difflib), else the list of them."""
    ids = sorted(known)
    close = difflib.get_close_matches(dag_id, ids, n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        hint = f"DAGs: {', '.join(ids)}" if ids else "there are no DAGs"
    return click.ClickException(f"unknown DAG {dag_id!r}{' in ' + where if where else ''}: {hint}")


@asynccontextmanager
async def open_client(
    endpoint: Endpoint,
    dag_ids: list[str],
    *,
    retry_first: bool = False,
    interactive: bool = False,
    **kwargs: Any,
) -> AsyncIterator[Client]:
    """A connected client receiving the events of `dag_ids` (["*"]: every DAG; []: none, for
    a command that only asks or controls); fails fast (unless `retry_first`) if the daemon
    is not there. `interactive`: a person is waiting, reconnect with a lower backoff cap."""
    if interactive:
        kwargs.setdefault("max_backoff", INTERACTIVE_MAX_BACKOFF)
    try:
        async with connect(endpoint.url, endpoint.token, dag_ids, **kwargs) as client:
            if not retry_first:
                first = await _first_item(client)
                if isinstance(first, ConnectionLost):
                    raise _unreachable(endpoint, first)
            yield client
    except AuthFailed:
        raise click.ClickException(
            f"the daemon refused the token from {endpoint.token_source}"
        ) from None


async def _first_item(client: Client) -> object:
    """The client's first item (AuthFailed when the token is refused: open_client says whose
    token it was)."""
    async for item in client:
        return item
    return None


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """trio.run with the errors a user should see turned into clean messages."""
    try:
        return trio.run(fn, *args)
    except ClientError as exc:
        raise click.ClickException(
            exc.message if exc.code is not ErrorCode.AUTH_FAILED else "the daemon refused the token"
        ) from None


async def _known_dag(client: Client, dag_id: str) -> list[DagSummary]:
    """The daemon's DAGs; raises the did-you-mean error when `dag_id` is not among them."""
    dags = await client.list_dags()
    if dag_id not in {d.dag_id for d in dags}:
        raise unknown_dag(dag_id, (d.dag_id for d in dags))
    return dags


# ------------------------------------------------------------------ commands


def dag_lines(dags: list[DagSummary]) -> list[str]:
    """`dagd dags`: one line per DAG in aligned columns (id, schedule, `paused` when any DAG
    is, next run, steps, description), the widths taken from the longest value so a paused
    DAG or a long id never shifts a column; under a DAG that runs the last good version of a
    file that is broken now, the file's problems, indented."""
    any_paused = any(dag.paused for dag in dags)
    digits = max((len(str(len(dag.steps))) for dag in dags), default=1)
    rows = []
    for dag in dags:
        count = len(dag.steps)
        rows.append(
            (
                dag.dag_id,
                dag.schedule or "manual",
                ("paused" if dag.paused else "") if any_paused else None,
                f"next: {iso_z(dag.next_run) if dag.next_run is not None else '-'}",
                f"{count:>{digits}} {'step' if count == 1 else 'steps'}",
                dag.description,
            )
        )
    widths = [max((len(row[i] or "") for row in rows), default=0) for i in range(5)]
    lines = []
    for dag, row in zip(dags, rows, strict=True):
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            *([] if row[2] is None else [row[2].ljust(widths[2])]),
            row[3].ljust(widths[3]),
            row[4].ljust(widths[4]),
        ]
        line = (" ".join(cells) + f"  {row[5]}").rstrip()
        if dag.file_error:
            # Indented under the DAG: its first word is never taken for a DAG id by a script.
            first, *more = dag.file_error.splitlines() or [""]
            line += f"\n    running the last good version; {first}"
            line += "".join(f"\n    {extra}" for extra in more)
        lines.append(line)
    return lines


async def list_dags(endpoint: Endpoint, as_json: bool) -> None:
    """`dagd dags`: one line per loaded DAG, or the protocol's `dags` answer with --json."""
    async with open_client(endpoint, []) as client:
        answer = await client.request(ListDags())
    assert isinstance(answer, DagList)  # request() checked it against ANSWER_TO
    if as_json:
        print_json(attrs.evolve(answer, request_id=None))
        return
    for line in dag_lines(answer.dags):
        click.echo(line)
    if not answer.dags:
        click.echo("the daemon has no DAGs", err=True)
    for line in broken_file_lines(answer.broken_files):
        click.echo(line, err=True)


async def list_pools(endpoint: Endpoint, as_json: bool) -> None:
    """`dagd pools`: one line per pool of the daemon's config.toml (name, slots, in use,
    waiting attempts), or the protocol's `pools` answer with --json."""
    async with open_client(endpoint, []) as client:
        pools = await client.list_pools()
    if as_json:
        print_json(PoolList(pools))
        return
    if not pools:
        click.echo("the daemon has no pools (add them under [pools] in config.toml)", err=True)
        return
    width = max(len("POOL"), *(len(pool.name) for pool in pools))
    click.echo(f"{'POOL'.ljust(width)}  SLOTS  IN USE  WAITING")
    for pool in pools:
        click.echo(
            f"{pool.name.ljust(width)}  {pool.slots:>5}  {pool.in_use:>6}  {pool.waiting:>7}"
        )


def broken_file_lines(files: list[BrokenFile]) -> list[str]:
    """`dagd dags`, on stderr: each problem of each DAG file that no version of runs, as
    `not loaded: <file>: step 's': field 'f': <message>` (a broken file whose last good
    version runs is shown under its DAG already)."""
    lines = []
    for file in files:
        if file.dag_id is not None:
            continue
        for problem in file.problems:
            where = [file.file]
            if problem.step is not None:
                where.append(f"step {problem.step!r}")
            if problem.field is not None:
                where.append(f"field {problem.field!r}")
            lines.append(f"not loaded: {': '.join(where)}: {problem.message}")
    return lines


async def list_runs(endpoint: Endpoint, dag_id: str | None, limit: int, as_json: bool) -> None:
    """`dagd runs`: the newest `limit` runs (of `dag_id`, or of all), one line each, or the
    protocol's `runs` answer with --json. A `dag_id` the daemon does not know and that has no
    runs is an error with a did-you-mean."""
    async with open_client(endpoint, []) as client:
        try:
            runs = await client.list_runs(dag_id, limit)
        except ClientError as exc:
            if dag_id is not None and exc.code == ErrorCode.UNKNOWN_DAG:
                await _known_dag(client, dag_id)
            raise
        if dag_id is not None and not runs:  # a daemon that answers [] for any DAG id
            await _known_dag(client, dag_id)
    if as_json:
        print_json(RunList(runs))
        return
    if not runs:
        click.echo("no runs yet", err=True)
    for run in runs:
        since = run.started_at if run.started_at is not None else run.queued_at
        # Who made the run, when another run did: a sub-DAG's parent, an `after` upstream.
        made_by = (
            f"  (child of {one_line(run.parent_run_id)})"
            if run.parent_run_id is not None
            else f"  (after {one_line(run.triggered_by)})"
            if run.triggered_by is not None
            else ""
        )
        click.echo(f"{run.status:<10} {run.dag_id:<20} {run.run_id:<50} {iso_z(since)}{made_by}")


async def control(endpoint: Endpoint, action: str, run_id: str, as_json: bool) -> None:
    """`dagd cancel` / `dagd retry` (`action` "cancel" or "retry"). Raises ClientError with
    the daemon's code (unknown_run, not_running, not_finished, not_retryable, ...)."""
    async with open_client(endpoint, []) as client:
        await (client.cancel(run_id) if action == "cancel" else client.retry(run_id))
    if as_json:
        print_json(CancelAccepted(run_id) if action == "cancel" else RetryAccepted(run_id))
    else:
        click.echo(f"{action} accepted: {run_id}")


@attrs.frozen
class TriggerOutput:
    """How `dagd trigger` prints: `as_json` (the `triggered` answer), `quiet` (the run id
    alone), else "triggered DAG: RUN"; `live` view or plain lines while it waits."""

    as_json: bool = False
    quiet: bool = False
    live: bool = False


async def trigger(
    endpoint: Endpoint,
    dag_id: str,
    params: dict[str, str],
    wait: bool,
    out: TriggerOutput,
) -> int:
    """`dagd trigger`: start a run; with `wait`, follow it and return its exit code (0
    success, else the failed or cancelled code), else 0 once it is queued."""
    async with open_client(endpoint, [dag_id], interactive=wait) as client:
        try:
            run_id = await client.trigger(dag_id, params)
        except ClientError as exc:
            if exc.code == ErrorCode.UNKNOWN_DAG:
                await _known_dag(client, dag_id)
            raise
        if out.as_json:
            print_json(Triggered(dag_id, run_id))
        elif out.quiet:
            click.echo(run_id)
        else:
            click.echo(f"triggered {dag_id}: {run_id}", err=wait)
        if not wait:
            return EXIT_OK
        # With --json or -q stdout holds only the answer: progress goes to stderr.
        to_stderr = out.as_json or out.quiet
        return await follow(client, {run_id}, out.live, stop_when_done=True, stderr=to_stderr)


async def watch(endpoint: Endpoint, dag_ids: list[str], live: bool) -> int:
    """`dagd watch`: follow the runs of `dag_ids` (["*"]: all) until interrupted, from a
    snapshot of where they are now."""
    async with open_client(
        endpoint, dag_ids or ["*"], retry_first=True, interactive=True, initial_snapshot=True
    ) as client:
        if not dag_ids:
            return await follow(client, None, live, stop_when_done=False)
        # The check runs beside the view: while the daemon is away the view says so at once.
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_check_watched, client, dag_ids)
                code = await follow(client, None, live, stop_when_done=False)
                nursery.cancel_scope.cancel()
        return code


async def _check_watched(client: Client, dag_ids: list[str]) -> None:
    """Refuse a watch of DAGs the daemon does not know (did-you-mean) when none of them is
    known, warn on stderr for each unknown one otherwise. Skipped while the daemon cannot be
    reached: the watch waits for it, and a DAG file may appear meanwhile."""
    try:
        dags = await client.list_dags()
    except NotConnected:
        return
    known = {d.dag_id for d in dags}
    unknown = [d for d in dag_ids if d not in known and d != "*"]
    if len(unknown) == len(dag_ids):
        raise unknown_dag(unknown[0], known)
    for dag_id in unknown:
        click.echo(f"warning: {unknown_dag(dag_id, known).message}", err=True)


async def follow(
    client: Client,
    run_ids: set[str] | None,
    live: bool,
    stop_when_done: bool,
    *,
    stderr: bool = False,
) -> int:
    """Show events (live view or plain lines) until the runs end (or forever, for watch).
    While the daemon is away the view counts down to the next attempt, a second at a time;
    plain lines say it once per attempt."""
    from rich.live import Live

    from dagd.cli.render import RunsView

    console = make_console(stderr=stderr)
    stream = sys.stderr if stderr else sys.stdout
    view = RunsView()

    def show_line(text: str | None) -> None:
        if text and not live:
            stream.write(text + "\n")
            stream.flush()

    def handle(item: object) -> int | None:
        if isinstance(item, ConnectionLost):
            view.disconnected(item.message, item.retry_in, trio.current_time())
            show_line(view.notice)  # plain lines: once per attempt, not every second
        elif isinstance(item, Connected):
            if view.notice:
                show_line("reconnected; catching up")
            view.reconnected()
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
                        return exit_code_of(run.status)
        elif (
            run_ids is None
            or getattr(item, "run_id", None) in run_ids
            or (isinstance(item, ErrorEvent) and item.run_id is None)
        ):
            view.apply(item)  # type: ignore[arg-type]  # the client yields only DAG events here
            show_line(view.line(item))  # type: ignore[arg-type]
            if (
                stop_when_done
                and isinstance(item, DagRunStatusEvent)
                and run_ids is not None
                and item.run_id in run_ids
                and item.status.finished
            ):
                return exit_code_of(item.status)
        return None

    async def consume(display: Live | None) -> int:
        async for item in client:
            code = handle(item)
            if code is not None:
                return code
            if display is not None:
                display.update(view.render())
        return EXIT_OK

    async def tick(display: Live) -> None:
        while True:
            await trio.sleep(0.25)  # the countdown's second changes within a quarter of one
            if view.notice is not None:
                view.tick(trio.current_time())
                display.update(view.render())

    code = EXIT_CANCELLED
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupt() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(interrupt)
            if live:
                with Live(view.render(), console=console, transient=False) as display:
                    nursery.start_soon(tick, display)
                    code = await consume(display)
            else:
                code = await consume(None)
            nursery.cancel_scope.cancel()
    for run in view.runs.values():
        if run_ids is not None and run.run_id in run_ids:
            view.summary(run, console)
    return code
