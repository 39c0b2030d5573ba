"""The `dagd` command. Thin: it reads options, builds the core objects and hands them over.

User mistakes become `click.ClickException`s (exit code 1 with a clear message) or usage errors
(exit code 2); a run that fails exits 1, a cancelled one 130. Every code is in
dagd/cli/exitcodes.py and docs/cli.md.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs
import click

from dagd.cli.completion import complete_dag_ids, complete_run_ids
from dagd.cli.exitcodes import EXIT_FAILED, EXIT_OK, exit_code_of
from dagd.cli.options import (
    config_option,
    dags_option,
    endpoint,
    load_config,
    params_option,
    parse_params,
    token_option,
    url_option,
)
from dagd.cli.output import json_option, make_console, print_json, problem_json, quiet_broken_pipe
from dagd.core.config import Config, ConfigError
from dagd.core.events import DagEvent, ErrorEvent, StepStatusEvent
from dagd.core.exceptiongroups import unwrap_single
from dagd.core.model import DagSpec, RunStatus, StepStatus
from dagd.core.timefmt import RunIdFactory
from dagd.runtime.executor import kill_steps_now

# The engine, the store and the protocol's classes are imported where they are used: every
# `dagd` start, and every shell Tab (completion), would otherwise pay for them.
if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from rich.console import Console

    from dagd.cli.render import RunsView
    from dagd.core.protocol.answers import DagSummary
    from dagd.core.runstate import RunState
    from dagd.daemon.dagfolder import DagFolder
    from dagd.runtime.executor import StepExecutor

log = logging.getLogger("dagd")


class DagdGroup(click.Group):
    """The `dagd` group: every command stops quietly (exit 141, no traceback) when the
    reader of its stdout goes away, as in `dagd runs | head -1`."""

    def invoke(self, ctx: click.Context) -> Any:
        with quiet_broken_pipe():
            return super().invoke(ctx)


def _dags_dir(config: Config, dags_dir: Path | None) -> Path:
    return dags_dir if dags_dir is not None else config.dags_dir


def _load_folder(config_path: Path | None, dags_dir: Path | None) -> DagFolder:
    from dagd.daemon.dagfolder import load_dag_folder

    config = load_config(config_path)
    return load_dag_folder(
        _dags_dir(config, dags_dir), executors=config.executor_names, pools=config.pools
    )


@click.group(cls=DagdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dagd")
def main() -> None:
    """dagd: run DAGs of shell commands and Python functions, on a schedule or by hand.

    \b
    Quick start:
      dagd validate              check every DAG file in ./dags
      dagd list                  show the DAGs
      dagd run etl -p date=2024-01-01
                                 run one DAG here and now, with live progress
      dagd serve                 start the daemon (cron, history, WebSocket events)

    Exit codes, the same for every command: 0 success, 1 failure (or a failed run), 2 usage
    error, 130 cancelled or interrupted, 141 stdout closed early. See docs/cli.md.
    """


def local_summary(dag: DagSpec) -> DagSummary:
    """A DAG file's DAG in the shape of the protocol's `dags` answer, read without a daemon:
    no next run (only the daemon's scheduler knows it), not paused."""
    from dagd.core.protocol.answers import DagSummary

    return DagSummary(
        dag.id,
        dag.description,
        dag.schedule,
        None,
        list(dag.steps),
        list(dag.tags),
        dict(dag.params),
    )


def folder_json(folder: DagFolder) -> dict[str, Any]:
    """`list --json` and `validate --json`: `{"dags": [DagSummary...], "problems": [{"file",
    "step", "field", "message"}...]}`, DAGs sorted by id, problems by file."""
    return {
        "dags": [local_summary(d) for d in sorted(folder.dags.values(), key=lambda d: d.id)],
        "problems": [
            problem_json(p) for path in sorted(folder.problems) for p in folder.problems[path]
        ],
    }


@main.command()
@config_option
@dags_option
@json_option
def validate(config_path: Path | None, dags_dir: Path | None, as_json: bool) -> None:
    """Check every DAG file; print 'ok' or every problem, each naming file, step and field.

    Exits 1 when any file has a problem."""
    folder = _load_folder(config_path, dags_dir)
    if as_json:
        print_json(folder_json(folder))
        sys.exit(EXIT_OK if folder.ok else EXIT_FAILED)
    for problems in folder.problems.values():
        for problem in problems:
            click.echo(str(problem), err=True)
    if not folder.ok:
        count = sum(len(p) for p in folder.problems.values())
        # A DAG that loaded may still have problems across the folder (its links).
        fine = sum(1 for dag in folder.dags.values() if dag.source not in folder.problems)
        raise click.ClickException(
            f"{count} problem(s) in {len(folder.problems)} file(s); {fine} DAG(s) are fine"
        )
    click.echo(f"ok: {len(folder.dags)} DAG(s)")


@main.command("list")
@config_option
@dags_option
@json_option
def list_dags(config_path: Path | None, dags_dir: Path | None, as_json: bool) -> None:
    """List the DAG files' DAGs: id, schedule, steps, description (no daemon needed).

    Broken files are named on stderr; exits 1 when there are broken files and no DAG."""
    folder = _load_folder(config_path, dags_dir)
    if as_json:
        print_json(folder_json(folder))
    elif not Path(folder.folder).is_dir():
        # The loader reports a missing folder as a problem keyed by the folder itself: it is
        # no DAG file, and `dagd validate` could only say the same.
        raise click.ClickException(
            f"the DAG folder {folder.folder} does not exist (set dags_dir in the config, or "
            "pass --dags)"
        )
    else:
        for dag in sorted(folder.dags.values(), key=lambda d: d.id):
            schedule = dag.schedule or "manual"
            desc = f"  {dag.description}" if dag.description else ""
            count = len(dag.steps)
            noun = "step " if count == 1 else "steps"
            click.echo(f"{dag.id:<24} {schedule:<16} {count:>4} {noun}{desc}".rstrip())
        for path in sorted(folder.problems):
            click.echo(f"{Path(path).name:<24} (broken: run `dagd validate`)", err=True)
    if folder.problems and not folder.dags:
        if as_json:
            sys.exit(EXIT_FAILED)
        raise click.ClickException(f"no DAG could be loaded from {folder.folder}")


@main.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@params_option
@config_option
@dags_option
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many steps at once (default: max_parallel_steps of the config).",
)
@click.option("--plain", is_flag=True, help="Print one line per event instead of a live view.")
@click.option(
    "--quiet", "-q", is_flag=True, help="Print only failures and the summary, no progress."
)
def run(
    dag_id: str,
    params: tuple[str, ...],
    config_path: Path | None,
    dags_dir: Path | None,
    parallel: int | None,
    plain: bool,
    quiet: bool,
) -> None:
    """Run DAG_ID once in this process (no daemon needed) and show its progress.

    On a terminal: a live view; otherwise (or with --plain) one line per step transition;
    with --quiet only failed steps and the summary. Exits 0 when the run succeeds, 1 when it
    fails, 130 when interrupted (Ctrl-C stops every step and its child processes).
    """
    config = load_config(config_path)
    folder_path = _dags_dir(config, dags_dir)
    path = folder_path / f"{dag_id}.toml"
    from dagd.daemon.dagfolder import load_dag_folder

    folder = load_dag_folder(folder_path, executors=config.executor_names, pools=config.pools)
    dag = folder.dags.get(dag_id)
    if dag is None:
        if path.is_file():
            bad = folder.problems.get(str(path), [])
            raise click.ClickException("\n".join(map(str, bad)) or f"cannot load {path}")
        from dagd.cli.remote import unknown_dag

        raise unknown_dag(dag_id, folder.dags, str(folder_path))
    import trio

    from dagd.core.runstate import RunState
    from dagd.runtime.local.procs import raise_open_files_limit

    try:
        bound = dag.bind_params(parse_params(params))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    state = RunState(dag, RunIdFactory().make("manual", time.time()), bound)
    console = make_console()
    mode = "quiet" if quiet else "live" if not plain and console.is_terminal else "plain"
    raise_open_files_limit()
    status = trio.run(
        _run_here, state, config, parallel or config.max_parallel_steps, console, mode, folder.dags
    )
    sys.exit(exit_code_of(status))


def plain_printer(view: RunsView, out: TextIO, quiet: bool) -> Callable[[DagEvent], None]:
    """The event handler of `dagd run` off a terminal: fold the event into `view`, and write
    its line straight to `out` (no rich rendering per line: a line costs a few µs). With
    `quiet`, only steps that finally failed (status failed, not retrying) and errors that are
    not a step's get a line: a step's error event is one failed attempt, which a retry may
    still make good, and the final `failed` line carries the last attempt's error."""
    line_of = view.line
    write = out.write
    failed = StepStatus.FAILED

    def publish(event: DagEvent) -> None:
        view.apply(event)
        if quiet and not (
            (isinstance(event, ErrorEvent) and event.step_id is None)
            or (isinstance(event, StepStatusEvent) and event.status is failed)
        ):
            return
        line = line_of(event)
        if line:
            write(line + "\n")

    return publish


async def _run_here(
    state: RunState,
    config: Config,
    parallel: int,
    console: Console,
    mode: str,
    dags: Mapping[str, DagSpec],
) -> RunStatus:
    """Run `state` here with the executors config.toml asks for (the local one, and Dask's
    when `[executors.dask]` is set), reporting in `mode` ("live", "plain" or "quiet"); its
    sub-DAG steps run child runs of `dags` here too (dagd/cli/subruns.py)."""
    from dagd.app import open_executors

    try:
        async with open_executors(config) as executors:
            return await _drive_here(state, executors, parallel, console, mode, config, dags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


async def _drive_here(
    state: RunState,
    executors: Mapping[str, StepExecutor],
    parallel: int,
    console: Console,
    mode: str,
    config: Config,
    dags: Mapping[str, DagSpec],
) -> RunStatus:
    import trio
    from rich.live import Live

    from dagd.cli.render import RunsView
    from dagd.cli.subruns import HereChildRuns
    from dagd.runtime.engine import RunDriver
    from dagd.runtime.pools import Pools

    view = RunsView()
    live = mode == "live"
    publish = view.apply if live else plain_printer(view, sys.stdout, quiet=mode == "quiet")
    slots = trio.CapacityLimiter(parallel)
    # config.toml's pools hold here too: the run and its child runs share them, as a
    # daemon's runs would.
    pools = Pools(config.pools) if config.pools else None
    children = HereChildRuns(dags, executors, publish, slots, pools)
    driver = RunDriver(state, children.executors, publish, step_slots=slots, pools=pools)
    children.drivers[state.run_id] = driver

    async def stop_on_signal() -> None:
        # Listening goes on until the run is over: a second signal must not kill this
        # process and leave steps running; it cuts the grace period short instead.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if state.cancelling or state.status.finished:
                    click.echo(f"{name} again: killing the steps now", err=True)
                    kill_steps_now(executors)
                    driver.stop_handlers(f"stopped: {name} again")
                    continue
                click.echo(
                    f"{name}: stopping (steps get {config.kill_grace:g}s to exit; "
                    "send it again to kill them now)",
                    err=True,
                )
                driver.cancel(f"interrupted by {name}")

    async def refresh(display: Live) -> None:
        while True:
            display.update(view.render())
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        children.nursery = nursery
        nursery.start_soon(stop_on_signal)
        if live:
            with Live(view.render(), console=console, transient=True) as display:
                nursery.start_soon(refresh, display)
                await driver.run()
        else:
            await driver.run()
        nursery.cancel_scope.cancel()
    sys.stdout.flush()
    run_view = view.view(state.dag.id, state.run_id)
    view.summary(run_view, console)
    if config.log_dir is not None:
        folder = config.log_dir / state.dag.id / state.run_id
        # Log files are made on a step's first output: a run of quiet steps leaves none.
        where = str(folder) if folder.is_dir() else "none (no step wrote any output)"
        console.print(f"  logs: {where}", highlight=False, markup=False)
    return state.status


@main.command()
@config_option
@dags_option
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on (default 3000).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite history, step logs and token live.",
)
@click.option("--no-websocket", is_flag=True, help="Do not serve the WebSocket endpoint.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
def serve(
    config_path: Path | None,
    dags_dir: Path | None,
    host: str | None,
    port: int | None,
    state_dir: Path | None,
    no_websocket: bool,
    verbose: bool,
) -> None:
    """Start the daemon: run DAGs on their schedules and on request, keep their history, and
    stream live events over WebSocket. Stops cleanly on Ctrl-C or SIGTERM."""
    import trio

    from dagd.daemon.statelock import StateDirError
    from dagd.daemon.store import StateFileError
    from dagd.runtime.local.procs import raise_open_files_limit

    config = load_config(config_path)
    server = config.server
    server = attrs.evolve(
        server,
        host=host if host is not None else server.host,
        port=port if port is not None else server.port,
        enabled=server.enabled and not no_websocket,
    )
    config = attrs.evolve(
        config,
        server=server,
        dags_dir=dags_dir if dags_dir is not None else config.dags_dir,
        state_dir=state_dir if state_dir is not None else config.state_dir,
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config.token_values(os.environ)  # an unset token variable: one line, before anything
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not config.dags_dir.is_dir():  # the daemon starts anyway and picks up files later
        log.warning(
            "DAG folder %s does not exist: no DAGs until it is created (set dags_dir in the "
            "config or pass --dags)",
            config.dags_dir,
        )
    before, after = raise_open_files_limit()
    if after > before:
        log.debug("open files limit raised from %d to %d", before, after)
    try:
        with unwrap_single():  # _serve's nursery wraps even a start-up error in a group
            trio.run(_serve, config)
    except StateDirError as exc:  # another daemon owns the folder: one line, nothing touched
        raise click.ClickException(exc.message) from None
    except StateFileError as exc:  # damaged, truncated, read-only: one line, file untouched
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    except ConfigError as exc:  # e.g. a token's sha256 that is not 64 hex digits
        raise click.ClickException(f"{config.source or 'config'}: {exc}") from None


async def _serve(config: Config) -> None:
    import trio

    from dagd.app import open_app
    from dagd.daemon import readiness

    # The signal receiver stays open through the shutdown: a second signal must never kill
    # dagd half way (steps left running, runs left `running`); it cuts the grace short.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async with open_app(config, websocket=config.server.enabled) as app:
                daemon = app.daemon
                where = (
                    f"events at {app.url}, the dashboard at {app.http_url}"
                    if app.url is not None
                    else "no WebSocket server"
                )
                log.info(
                    "dagd ready: %d DAG(s) from %s; %s; state in %s",
                    len(daemon.dags),
                    config.dags_dir,
                    where,
                    config.state_dir,
                )
                readiness.notify("READY=1")  # systemd Type=notify: only when NOTIFY_SOCKET is set
                async for signum in signals:
                    log.info(
                        "%s received: stopping (running steps get %gs to exit, then "
                        "handlers of cancelled runs get %gs; send it again to kill them now)",
                        signal.Signals(signum).name,
                        config.kill_grace,
                        config.handler_grace,
                    )
                    readiness.notify("STOPPING=1")
                    break
                nursery.start_soon(_kill_on_signal, signals, daemon.kill_now)
            nursery.cancel_scope.cancel()
    log.info("dagd stopped")


async def _kill_on_signal(signals: AsyncIterator[int], kill_now: Callable[[], None]) -> None:
    """During the shutdown: each further SIGINT/SIGTERM SIGKILLs the steps still running, on
    every executor that can (`Daemon.kill_now`: the local one, Dask's), and stops the runs'
    lifecycle handlers; their runs are still recorded before dagd exits."""
    async for signum in signals:
        log.warning("%s received again: killing the running steps now", signal.Signals(signum).name)
        kill_now()


# ------------------------------------------------------- talking to the daemon


@main.command()
@config_option
@url_option
@token_option
@json_option
def dags(config_path: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """List the DAGs the running daemon knows, with their next scheduled run.

    A paused DAG says so; a DAG whose file is broken now shows the file's error (the daemon
    runs its last good version meanwhile)."""
    from dagd.cli import remote

    remote.run_async(remote.list_dags, endpoint(config_path, url, token), as_json)


@main.command()
@config_option
@url_option
@token_option
@json_option
def pools(config_path: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Show the running daemon's pools: slots, slots in use, and steps waiting for one.

    Pools are set in config.toml under [pools]; a step joins one with `pool = "<name>"`."""
    from dagd.cli import remote

    remote.run_async(remote.list_pools, endpoint(config_path, url, token), as_json)


@main.command()
@click.argument("dag_id", required=False, shell_complete=complete_dag_ids)
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@config_option
@url_option
@token_option
@json_option
def runs(
    dag_id: str | None,
    limit: int,
    config_path: Path | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Show the latest runs (of DAG_ID, or of every DAG), newest first.

    A DAG_ID the daemon does not know (and that has no runs) is an error."""
    from dagd.cli import remote

    where = endpoint(config_path, url, token)
    remote.run_async(remote.list_runs, where, dag_id, limit, as_json)


@main.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@params_option
@click.option("--wait", is_flag=True, help="Follow the run live and exit with its outcome.")
@click.option("--plain", is_flag=True, help="With --wait: plain lines instead of a live view.")
@click.option("--quiet", "-q", is_flag=True, help="Print the run id alone.")
@config_option
@url_option
@token_option
@json_option
def trigger(
    dag_id: str,
    params: tuple[str, ...],
    wait: bool,
    plain: bool,
    quiet: bool,
    config_path: Path | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Start a run of DAG_ID on the running daemon and print its run id.

    With --wait, follow it (reconnecting if the daemon restarts) and exit 0 on success, 1 on
    failure, 130 if it was cancelled. With --json or -q, stdout holds only the answer (the
    `triggered` document, or the run id) and --wait's progress goes to stderr.
    """
    from dagd.cli import remote

    where = endpoint(config_path, url, token)
    live = wait and not plain and not as_json and not quiet and sys.stdout.isatty()
    out = remote.TriggerOutput(as_json=as_json, quiet=quiet, live=live)
    code = remote.run_async(remote.trigger, where, dag_id, parse_params(params), wait, out)
    sys.exit(code)


def _run_command(action: str, help_text: str) -> click.Command:
    """`dagd cancel` and `dagd retry`: one request about one run, sent to the daemon."""

    @main.command(action, help=help_text)
    @click.argument("run_id", shell_complete=complete_run_ids)
    @config_option
    @url_option
    @token_option
    @json_option
    def command(
        run_id: str, config_path: Path | None, url: str | None, token: str | None, as_json: bool
    ) -> None:
        from dagd.cli import remote

        where = endpoint(config_path, url, token)
        remote.run_async(remote.control, where, action, run_id, as_json)

    return command


cancel = _run_command(
    "cancel", "Cancel RUN_ID: waiting steps are cancelled, running ones are stopped."
)
retry = _run_command(
    "retry", "Retry a failed or cancelled RUN_ID: successful steps are kept, the rest run again."
)


@main.command()
@click.argument("dag_ids", nargs=-1, shell_complete=complete_dag_ids)
@click.option("--plain", is_flag=True, help="Plain lines instead of a live view.")
@config_option
@url_option
@token_option
def watch(
    dag_ids: tuple[str, ...],
    plain: bool,
    config_path: Path | None,
    url: str | None,
    token: str | None,
) -> None:
    """Watch runs live (all DAGs, or the DAG_IDS given) until Ctrl-C.

    Shows a progress bar per run and the steps that are running or failed; while the daemon is
    unreachable it says so and retries, then catches up without gaps.
    """
    from dagd.cli import remote

    live = not plain and sys.stdout.isatty()
    remote.run_async(remote.watch, endpoint(config_path, url, token), list(dag_ids), live)


def _add_commands() -> None:
    from dagd.cli import dashboard, inspect, logs, ops

    for command in (*inspect.COMMANDS, *ops.COMMANDS, *logs.COMMANDS, *dashboard.COMMANDS):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":
    main()
