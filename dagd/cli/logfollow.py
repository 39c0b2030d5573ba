"""`dagd logs --follow` through the running daemon: `follow_log` over its WebSocket.

The daemon knows when an attempt is over (no guessing from the history's last commit), pushes
output as it is written, and reaches logs of steps that ran on a Dask cluster or on another
machine's daemon. Attempt by attempt, from the first (or only the one asked for): both
streams of an attempt are followed at once and printed as they come, a header line marking
each switch between them (the format of `dagd logs`), until the step is final. The client
library resumes a follow after a lost connection from its byte offset, so a daemon restart
repeats and loses nothing.
"""

from __future__ import annotations

import click
import trio

from dagd.cli.remote import Endpoint, open_client, run_async
from dagd.client import Client, ClientError, LogFollower
from dagd.core.config import Config
from dagd.core.logslice import LogStream
from dagd.core.protocol.answers import LogEndReason, StepDetail
from dagd.core.protocol.codes import ErrorCode
from dagd.core.text import printable
from dagd.runtime.logfiles import attempt_log

#: Seconds between two looks at a step that has not started its next attempt yet.
WAIT_INTERVAL = 0.5


class _StepProblem(click.ClickException):
    """The daemon has the run but not this step or attempt: said as is, never a fallback."""


def follow_through_daemon(
    config: Config, endpoint: Endpoint, run_id: str, step_id: str, attempt: int | None
) -> bool:
    """Follow the step's log through the daemon at `endpoint` until the step is final.
    Returns False, having printed nothing, when the daemon cannot be reached or refuses the
    token, or does not know the run (the caller then reads the files). Raises
    click.ClickException for a step or attempt the run does not have."""
    try:
        return bool(run_async(_follow, config, endpoint, run_id, step_id, attempt))
    except _StepProblem:
        raise
    except click.ClickException:
        return False  # unreachable, or the token refused: the files may still be there


async def _follow(
    config: Config, endpoint: Endpoint, run_id: str, step_id: str, attempt: int | None
) -> bool:
    async with open_client(endpoint, [], interactive=True) as client:
        try:
            step, dag_id = await _step(client, run_id, step_id)
        except ClientError as exc:
            if exc.code is ErrorCode.UNKNOWN_RUN:
                return False
            raise _StepProblem(exc.message) from None
        try:
            return await _follow_step(client, config, dag_id, run_id, step, attempt)
        except ClientError as exc:  # output may have been printed: no falling back now
            raise _StepProblem(exc.message) from None


async def _follow_step(
    client: Client,
    config: Config,
    dag_id: str,
    run_id: str,
    step: StepDetail,
    attempt: int | None,
) -> bool:
    """Print attempt `attempt` (None: every attempt from the first, also the ones still to
    come) until the step is final."""
    step_id = step.step_id
    printer = _Printer(config, dag_id, run_id, step_id)
    current = attempt if attempt is not None else 1
    while True:
        while step.attempt < current:  # not started yet, or waiting for a retry
            if step.status.finished:
                if attempt is not None:
                    made = f"attempts: 1-{step.attempt}" if step.attempt else "none"
                    raise _StepProblem(
                        f"no attempt {attempt} of step {step_id!r} in run {run_id!r} ({made})"
                    )
                if current == 1:
                    click.echo(f"step {step_id!r} of run {run_id!r} did not run ({step.status})")
                return True
            await trio.sleep(WAIT_INTERVAL)
            step, _ = await _step(client, run_id, step_id)
        await printer.attempt(client, current)
        if attempt is not None:
            return True
        step, _ = await _step(client, run_id, step_id)
        if step.attempt == current and step.status.finished:
            return True
        current += 1


async def _step(client: Client, run_id: str, step_id: str) -> tuple[StepDetail, str]:
    """The step's detail (latest status and attempt number) and the run's DAG id."""
    run = await client.get_run(run_id)
    for step in run.steps:
        if step.step_id == step_id:
            return step, run.record.dag_id
    raise _StepProblem(f"no step {step_id!r} in run {run_id!r}")


class _Printer:
    """Prints chunks of both streams as they come, a header line at each switch."""

    def __init__(self, config: Config, dag_id: str, run_id: str, step_id: str) -> None:
        self.config = config
        self.ids = (dag_id, run_id, step_id)
        self.current: tuple[int, str] | None = None

    async def attempt(self, client: Client, attempt: int) -> None:
        """Both streams of `attempt`, until the daemon sent all of each."""
        streams: tuple[LogStream, ...] = ("out", "err")
        async with trio.open_nursery() as nursery:
            for stream in streams:
                follower = client.follow_log(self.ids[1], self.ids[2], attempt, stream=stream)
                nursery.start_soon(self._print, follower)

    async def _print(self, follower: LogFollower) -> None:
        async for chunk in follower:
            if (chunk.attempt, chunk.stream) != self.current:
                self.current = (chunk.attempt, chunk.stream)
                name = "stdout" if chunk.stream == "out" else "stderr"
                path = attempt_log(self.config.log_dir, *self.ids, chunk.attempt, chunk.stream)
                click.echo(f"==> attempt {chunk.attempt} {name} ({path}) <==")
            click.echo(printable(chunk.text), nl=False)
        end = follower.end
        if end is not None and end.reason is not LogEndReason.COMPLETE:
            click.echo(f"dagd: {end.message or end.reason}", err=True)
