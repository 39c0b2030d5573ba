"""Signals to a real `dagd serve` / `dagd run` process, with real steps that ignore SIGTERM or
leave their process group: a second signal cuts the grace period short but never leaves a
process or a `running` run behind; a clean shutdown, and kill -9 then a restart, leave no
escaped process either.

Runs are started the way tests/daemon/test_daemon_process.py does: a yearly cron schedule and
a `schedule` row 400 days old, so the daemon fires one run as soon as it starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import proctools as procs
import pytest
from clienthelp import add_marked_dag, poll_until, query_state

GRACE = 30  # seconds: far longer than any test here may take
# Ignores SIGTERM, and leaves one process outside its group (its own session).
STUBBORN = "trap '' TERM; setsid -f sleep 3005; sleep 3006"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "dags").mkdir()
    (tmp_path / "config.toml").write_text(
        f'dags_dir = "dags"\nstate_dir = "state"\nkill_grace = "{GRACE}s"\nprogress_interval = 0\n'
    )
    yield tmp_path


@pytest.fixture
def mark() -> Iterator[str]:
    mark = procs.new_mark()
    yield mark
    for pid in procs.live_processes(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Proc:
    """A `dagd` subprocess (killed at the end of the test if still alive)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.log = root / f"dagd-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dagd", *args, "--config", str(root / "config.toml")],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def started() -> Iterator[list[Proc]]:
    procs_: list[Proc] = []
    yield procs_
    for proc in procs_:
        proc.kill()


def serve(root: Path, started: list[Proc], mark: str, processes: int = 3) -> Proc:
    """A daemon whose run is going, with `processes` processes of its step alive."""
    daemon = Proc(root, "serve", "--no-websocket")
    started.append(daemon)
    # 60 s only ends a hung test: a start on 2 loaded cores can take several seconds
    ok = poll_until(lambda: len(procs.live_processes(mark)) >= processes, 60)
    assert ok, daemon.output()
    return daemon


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),  # Ctrl-C twice
        (signal.SIGTERM, signal.SIGINT),
    ],
    ids=["TERM-TERM", "INT-INT", "TERM-INT"],
)
def test_a_second_signal_kills_steps_at_once_and_records_them_cancelled(
    root: Path, mark: str, started: list[Proc], first: int, second: int
) -> None:
    add_marked_dag(root, "stubborn", mark, STUBBORN)
    daemon = serve(root, started, mark)
    daemon.signal(first)
    time.sleep(0.5)
    assert daemon.proc.poll() is None  # waiting for the stubborn step's grace period
    assert len(procs.live_processes(mark)) == 3  # it ignores SIGTERM
    sent = time.monotonic()
    daemon.signal(second)
    code = daemon.wait(timeout=15)
    out = daemon.output()
    assert time.monotonic() - sent < 10, out  # not the 30 s grace period
    assert code == 0, out
    assert "received again: killing the running steps now" in out
    assert "dagd stopped" in out
    assert "Traceback" not in out and "Aborted" not in out
    assert procs.wait_gone(mark, 3.0) == []  # the group and the escaped `sleep 3005`
    assert query_state(root, "SELECT status FROM runs") == [("cancelled",)]
    assert query_state(root, "SELECT status FROM steps") == [("cancelled",)]


def test_a_clean_shutdown_leaves_no_escaped_process(
    root: Path, mark: str, started: list[Proc]
) -> None:
    (root / "config.toml").write_text(
        'dags_dir = "dags"\nstate_dir = "state"\nkill_grace = "0.5s"\nprogress_interval = 0\n'
    )
    add_marked_dag(root, "escapes", mark, "setsid -f sleep 3005; sleep 3006")
    daemon = serve(root, started, mark)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.output()
    assert procs.wait_gone(mark, 3.0) == []
    assert query_state(root, "SELECT status FROM runs") == [("cancelled",)]


def test_kill_9_then_restart_kills_what_escaped(root: Path, mark: str, started: list[Proc]) -> None:
    add_marked_dag(root, "escapes", mark, "setsid -f sleep 3005; sleep 3006")
    daemon = serve(root, started, mark)
    daemon.proc.kill()  # kill -9: nothing of dagd runs any more
    daemon.wait(timeout=10)
    time.sleep(0.2)
    assert len(procs.live_processes(mark)) == 3  # the step, and what escaped it, live on
    again = Proc(root, "serve", "--no-websocket")
    started.append(again)
    assert poll_until(lambda: "dagd ready" in again.output(), 15), again.output()
    assert procs.wait_gone(mark, 3.0) == []
    assert query_state(root, "SELECT status FROM runs") == [("failed",)]


def test_dagd_run_second_ctrl_c_kills_steps_at_once(
    root: Path, mark: str, started: list[Proc]
) -> None:
    add_marked_dag(root, "stubborn", mark, STUBBORN, scheduled=False)
    run = Proc(root, "run", "stubborn", "--plain")
    started.append(run)
    assert poll_until(lambda: len(procs.live_processes(mark)) >= 3, 15), run.output()
    run.signal(signal.SIGINT)
    time.sleep(0.5)
    assert run.proc.poll() is None
    sent = time.monotonic()
    run.signal(signal.SIGINT)
    code = run.wait(timeout=15)
    out = run.output()
    assert time.monotonic() - sent < 10, out
    assert code == 130, out
    assert "SIGINT again: killing the steps now" in out
    assert "cancelled" in out
    assert "Traceback" not in out and "Aborted" not in out
    assert procs.wait_gone(mark, 3.0) == []
