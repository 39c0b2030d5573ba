"""The local executor: shell commands (shell.py, shellthread.py) and Python callables
(python.py) on this machine, behind the `StepExecutor` protocol (dagd/runtime/executor.py).

Its leftover handles name a shell attempt's process group (leftovers.py); its clean-up kills
those groups, and any process that carries an unfinished run's DAGD_RUN_ID.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import attrs
import trio

from dagd.core.model import StepSpec
from dagd.runtime.executor import (
    DEFAULT_EXECUTOR,
    AttemptResult,
    CheckResult,
    Leftover,
    LeftoverSink,
    StepContext,
)
from dagd.runtime.local.environment import ALWAYS_HIDDEN
from dagd.runtime.local.leftovers import clean_up as kill_leftovers
from dagd.runtime.local.outputfiles import OutputFiles
from dagd.runtime.local.python import run_callable
from dagd.runtime.local.shell import Hurry, run_check, run_shell


@attrs.define
class LocalExecutor:
    """Runs step attempts on this machine.

    `log_dir`: where attempt logs go (None: output is discarded). `grace`: seconds between
    SIGTERM and SIGKILL when a shell step is stopped. `base_env`: the environment steps start
    from (None: dagd's own). `hidden_env`: variables never passed to a step (dagd's own
    secrets; always DAGD_TOKEN, and `Config.secret_env_names` where a config is at hand).
    `subreaper`: on the first shell step, make this process a child subreaper (Linux), so
    what a step starts and leaves its process group is killed when the step ends. The
    process then inherits every orphan below it: those it cannot tie to a shell step (a
    Python step's, or an embedding program's own) stay zombies until it exits; an embedding
    program that double-forks processes of its own may prefer False (what escapes a step's
    group then goes to PID 1 and outlives the step). `sync_limiter`: bounds the worker
    threads of sync callables (default 32). `name`: the name it is registered under.
    """

    log_dir: Path | None = None
    grace: float = 5.0
    base_env: Mapping[str, str] | None = None
    hidden_env: Collection[str] = ALWAYS_HIDDEN
    subreaper: bool = True
    sync_limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(32))
    name: str = DEFAULT_EXECUTOR
    _hurry: Hurry = attrs.field(factory=Hurry, init=False)
    _outputs: OutputFiles = attrs.field(factory=lambda: OutputFiles(), init=False)

    async def run(
        self, step: StepSpec, ctx: StepContext, on_leftover: LeftoverSink | None = None
    ) -> AttemptResult:
        """One attempt of `step` (a `call` or a `command`), as `StepExecutor.run` says. A
        callable gets `ctx` with this executor's `log_dir` if `ctx` has none. Only shell
        attempts call `on_leftover` (once, right after the spawn, with leftovers.py's handle).
        A shell attempt's $DAGD_OUTPUT names a file in a folder of this executor's own
        (outputfiles.py)."""
        call = step.call
        if call is not None:
            if ctx.log_dir is None and self.log_dir is not None:  # made on the first ctx.log()
                ctx = attrs.evolve(ctx, log_dir=self.log_dir)
            return await run_callable(call, step.timeout, ctx, self.sync_limiter)
        try:
            output_path = self._outputs.next_path()
        except OSError as exc:
            return AttemptResult(False, f"cannot make a folder for outputs: {exc}")
        return await run_shell(
            step,
            ctx,
            log_dir=self.log_dir,
            grace=self.grace,
            base_env=self.base_env,
            hidden=self.hidden_env,
            executor=self.name,
            on_leftover=on_leftover,
            hurry=self._hurry,
            subreaper=self.subreaper,
            output_path=output_path,
        )

    async def check(
        self, command: str | tuple[str, ...], step: StepSpec, ctx: StepContext
    ) -> CheckResult:
        """A step's precondition, or one poll of its wait_for, on this machine (shell.py's
        `run_check`): the step's environment and `cwd`, this executor's grace and hidden
        variables."""
        return await run_check(
            command,
            step,
            ctx,
            grace=self.grace,
            base_env=self.base_env,
            hidden=self.hidden_env,
            hurry=self._hurry,
            subreaper=self.subreaper,
        )

    def kill_now(self) -> None:
        """Cut short the stopping of shell steps (a second signal at shutdown): SIGKILL the
        process group of every running shell attempt now, and stop any attempt from now on
        without a grace period. The attempts still end as usual (cancelled or failed, and
        their escaped processes killed); callables are not affected."""
        self._hurry.kill_all()

    async def clean_up(self, leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
        """Kill what shell attempts of the unfinished `run_ids` left running (leftovers.py's
        `clean_up`). It blocks the loop for the few ms a walk of /proc takes: it runs once, at
        startup, before any run."""
        kill_leftovers(leftovers, run_ids)
