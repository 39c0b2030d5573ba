"""Real `dagd serve` processes for the client, CLI and watch tests.

A `DaemonProc` writes a config (its own free port, state and DAG folders), starts
`python -m dagd serve --config ...` with stderr in a log file (a fresh one per start, so
"listening on" always refers to the current process), and can be stopped with SIGTERM or
kill -9 and started again on the same state. Every process it starts (the daemon and the
steps it runs) carries a `DAGD_TEST_MARK` in its environment, so `close()` can end whatever a
failing test left behind, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import proctools as procs
import trio

from dagd.daemon.schema import migrate
from dagd.daemon.store import connect

#: Environment variables that would override the config file's endpoint.
ENDPOINT_VARS = ("DAGD_URL", "DAGD_TOKEN", "DAGD_CONFIG")
#: Seconds DaemonProc waits for a daemon to listen before the test fails.
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the DAGD_* endpoint overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `predicate` (blocking) until it is truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


def poll_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `predicate` (blocking) until it is truthy or the deadline; returns its last value
    (falsy at the deadline: the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)


def query_state(root: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` on the SQLite file of the state folder root/state."""
    conn = sqlite3.connect(root / "state" / "dagd.sqlite3", timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def add_marked_dag(
    root: Path, dag_id: str, mark: str, command: str, scheduled: bool = True
) -> None:
    """dags/<dag_id>.toml: one step `work` running `command`, with DAGD_TEST_MARK=mark in its
    environment. `scheduled`: a yearly cron schedule (catchup=false) and a `schedule` row
    whose last slot is 400 days old, so that the next daemon start fires one run at once."""
    schedule = 'schedule = "0 0 1 1 *"\ncatchup = false\n' if scheduled else ""
    (root / "dags" / f"{dag_id}.toml").write_text(
        textwrap.dedent(
            f"""\
            {schedule}
            env = {{ {procs.MARK_VAR} = "{mark}" }}
            [steps.work]
            command = '''{command}'''
            """
        )
    )
    if scheduled:
        (root / "state").mkdir(exist_ok=True)
        conn = connect(root / "state" / "dagd.sqlite3")
        try:
            migrate(conn)
            conn.execute(
                "INSERT INTO schedule (dag_id, last_slot) VALUES (?, ?)",
                (dag_id, time.time() - 400 * 86400),
            )
        finally:
            conn.close()


async def await_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """`wait_for` for trio tests."""
    with trio.fail_after(timeout):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(0.02)


class DaemonProc:
    """One daemon's folder (config.toml, dags/, state/) and the `dagd serve` process on it."""

    def __init__(
        self,
        root: Path,
        dags: Mapping[str, str],
        *,
        top: str = "",
        server: str = "",
    ) -> None:
        self.root = root
        self.port = free_port()
        self.mark = procs.new_mark()
        self.starts = 0
        self.started_at = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        (root / "dags").mkdir(parents=True, exist_ok=True)
        for name, text in dags.items():
            (root / "dags" / f"{name}.toml").write_text(textwrap.dedent(text))
        self.config = root / "config.toml"
        self.config.write_text(
            f'state_dir = "state"\n'
            f'dags_dir = "dags"\n'
            f'kill_grace = "0.3s"\n'
            f"progress_interval = 0\n"
            f"{top}\n"
            f"[server]\n"
            f"port = {self.port}\n"
            f"{server}\n"
        )

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- paths

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def db(self) -> Path:
        return self.state / "dagd.sqlite3"

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.started_at = time.monotonic()
        self.log = self.root / f"daemon{self.starts}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dagd", "serve", "--config", str(self.config)],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(**{procs.MARK_VAR: self.mark}),
            )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited early:\n{self.output()}")
        return "listening on ws://" in self.output() and (self.state / "token").is_file()

    # READY_TIMEOUT only ends a hung test: a daemon's start-up takes well under a second alone,
    # but several seconds on CI's 2 cores shared with the rest of the suite (-n 2).

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from the last start() until the daemon listens."""
        wait_for(self._ready, timeout, "the daemon to listen")
        return time.monotonic() - self.started_at

    async def await_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from the last start() until the daemon listens."""
        await await_for(self._ready, timeout, "the daemon to listen")
        return time.monotonic() - self.started_at

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def _exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the daemon and wait until it exited; returns its exit code."""
        if self._exited():
            return None if self.proc is None else self.proc.returncode
        self.send(signum)
        wait_for(self._exited, timeout, "the daemon to exit")
        assert self.proc is not None
        return self.proc.returncode

    async def astop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self._exited():
            return None if self.proc is None else self.proc.returncode
        self.send(signum)
        await await_for(self._exited, timeout, "the daemon to exit")
        assert self.proc is not None
        return self.proc.returncode

    def close(self) -> None:
        """End the daemon (SIGTERM, then SIGKILL) and every process that carries its mark."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in procs.live_processes(self.mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -------------------------------------------------------------- the log

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return query_state(self.root, sql, args)

    def stored_events(self, dag_id: str, since: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """(seq, wire JSON) of the DAG's events in the daemon's event log, oldest first."""
        rows = self.query(
            "SELECT seq, body FROM events WHERE dag_id = ? AND seq > ? ORDER BY seq",
            (dag_id, since),
        )
        return [(seq, json.loads(body)) for seq, body in rows]

    def run_statuses(self, dag_id: str | None = None) -> dict[str, str]:
        if dag_id is None:
            rows = self.query("SELECT run_id, status FROM runs")
        else:
            rows = self.query("SELECT run_id, status FROM runs WHERE dag_id = ?", (dag_id,))
        return dict(rows)


@contextlib.contextmanager
def serving(root: Path, dags: Mapping[str, str], **kw: str) -> Iterator[DaemonProc]:
    """A `DaemonProc` on `root`, started and listening; closed (with its steps) at the end."""
    with DaemonProc(root, dags, **kw) as d:
        d.start()
        d.wait_ready()
        yield d


def start_dagd(*args: str, cwd: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """Start `python -m dagd ARGS` with its stdout and stderr piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dagd", *args],
        cwd=cwd,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dagd(
    *args: str, cwd: Path | None = None, timeout: float = 30.0, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m dagd ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "dagd", *args],
        cwd=cwd,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
