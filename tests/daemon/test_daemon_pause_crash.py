"""A confirmed pause or unpause survives kill -9 right after the answer: the daemon answers
only once the change is committed (as a trigger does).

The daemon process runs with its store writer gathering for 1 s after each batch (instead of
5 ms), set through a wrapper script: the change is then certain to wait in the queue when the
answer could go out, so an answer before the commit is caught every time, not by luck."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import proctools as procs
from clienthelp import DaemonProc, await_for, clean_env

from dagd.client import connect

GATHER = 1.0
WRAPPER = f"""
import runpy, sys
import dagd.daemon.store as store

_init = store.Store.__init__

def _slow_commits(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.gather_interval = {GATHER}

store.Store.__init__ = _slow_commits
sys.argv = ["dagd", *sys.argv[1:]]
runpy.run_module("dagd", run_name="__main__", alter_sys=True)
"""

DAILY = """
schedule = "0 3 * * *"
[steps.s]
command = "true"
"""


class SlowCommits(DaemonProc):
    """`dagd serve` through WRAPPER."""

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        wrapper = self.root / "slow_commits.py"
        wrapper.write_text(WRAPPER)
        self.starts += 1
        self.log = self.root / f"daemon{self.starts}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(wrapper), "serve", "--config", str(self.config)],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(**{procs.MARK_VAR: self.mark}),
            )


async def change_then_kill(d: SlowCommits, paused: bool) -> None:
    """Start the daemon, make its writer busy (a trigger's commit starts a gathering pause),
    pause or unpause `daily`, and kill -9 the daemon the moment the answer arrives."""
    d.start()
    await d.await_ready()
    async with connect(d.url, d.token, ["daily"]) as client:
        await client.trigger("daily")  # answered once committed: the writer now gathers
        if paused:
            assert (await client.pause("daily")).dag_id == "daily"
        else:
            assert (await client.unpause("daily")).dag_id == "daily"
        d.send(signal.SIGKILL)
    await await_for(lambda: d.proc is not None and d.proc.poll() is not None)


def paused_dags(d: SlowCommits) -> list[str]:
    return [dag_id for (dag_id,) in d.query("SELECT dag_id FROM paused_dags")]


async def test_a_confirmed_pause_and_unpause_survive_kill_9(tmp_path: Path) -> None:
    with SlowCommits(tmp_path, {"daily": DAILY}) as d:
        await change_then_kill(d, paused=True)
        assert paused_dags(d) == ["daily"]
        d.start()
        await d.await_ready()
        async with connect(d.url, d.token, ["daily"]) as client:
            [daily] = await client.list_dags()
            assert daily.paused and daily.next_run is None
        d.stop()

        await change_then_kill(d, paused=False)
        assert paused_dags(d) == []
