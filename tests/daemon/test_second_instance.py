"""A second dagd on a state folder in use: real `dagd serve` processes, a real state folder, a
running step.

The second one (another `dagd serve`, on another port or without a WebSocket server, or an
embedded `open_daemon`) refuses at once with one line and touches nothing: the first one's run
is still running and its step process alive, the token file is the same file. After a kill -9
of the first, the next start succeeds at once (no stale lock) and recovers. Commands that only
read the folder (`dagd logs`, `validate`, `list`), and `dagd run`, which runs a DAG without
the daemon's history, keep working beside it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import mounts
import proctools as procs
import pytest
import trio
from clienthelp import DaemonProc, dagd, free_port, serving, start_dagd, wait_for
from daemonhelp import wait_status

import dagd as dagd_api
from dagd.app import open_daemon
from dagd.core.config import Config, parse_config
from dagd.core.model import RunStatus

INTERRUPTED = "interrupted: the daemon stopped"

DAGS = {
    "slow": """
        [steps.wait]
        command = "echo waiting; sleep 3017"
    """,
    "quick": """
        [steps.hello]
        command = "echo hello from dagd run"
    """,
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    with serving(tmp_path, DAGS) as d:
        yield d


def pid_of(d: DaemonProc) -> int:
    assert d.proc is not None
    return d.proc.pid


def step_pids(d: DaemonProc) -> set[int]:
    """The live processes of the daemon's steps (they carry its test mark; the daemon too)."""
    return {pid for pid in procs.live_processes(d.mark) if pid != pid_of(d)}


def steps_gone(d: DaemonProc, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while step_pids(d):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def start_slow_run(d: DaemonProc) -> tuple[str, set[int]]:
    """Trigger `slow` through the first daemon; returns its run id and its step's processes
    once the step runs."""
    done = dagd("trigger", "slow", cwd=d.root)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().split()[-1]
    wait_for(
        lambda: d.query("SELECT status FROM steps WHERE run_id = ?", (run_id,)) == [("running",)],
        what="the slow step to run",
    )
    pids = wait_for(lambda: step_pids(d), what="the step's processes")
    return run_id, pids


def token_file_identity(d: DaemonProc) -> tuple[int, int, str]:
    path = d.state / "token"
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_text()


def assert_first_untouched(
    d: DaemonProc, run_id: str, pids: set[int], token: tuple[int, int, str]
) -> None:
    assert d.proc is not None and d.proc.poll() is None, d.output()
    assert d.run_statuses("slow") == {run_id: "running"}
    assert d.query("SELECT status, error FROM steps WHERE run_id = ?", (run_id,)) == [
        ("running", None)
    ]
    assert pids <= step_pids(d)  # nothing killed the step
    assert token_file_identity(d) == token  # not rewritten
    assert INTERRUPTED not in d.output()


def config_of(d: DaemonProc) -> Config:
    return parse_config(d.config.read_text(), d.root, source=d.config)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--port", "FREE"), id="another-port"),
        pytest.param(("--no-websocket",), id="no-websocket"),  # two crons on one folder
    ],
)
def test_a_second_serve_refuses_at_once_and_the_first_runs_on(
    daemon: DaemonProc, args: tuple[str, ...]
) -> None:
    run_id, pids = start_slow_run(daemon)
    token = token_file_identity(daemon)
    argv = [str(free_port()) if a == "FREE" else a for a in args]
    started = time.monotonic()
    second = start_dagd("serve", "--config", str(daemon.config), *argv, cwd=daemon.root)
    try:
        out, err = second.communicate(timeout=20)
    finally:
        second.kill()
    elapsed = time.monotonic() - started
    assert second.returncode == 1, err
    assert err.splitlines() == [
        f"Error: another dagd (pid {pid_of(daemon)}) is using {daemon.state.resolve()}; "
        "stop it first"
    ]
    assert out == ""
    assert_first_untouched(daemon, run_id, pids, token)
    # The first daemon still answers its clients.
    started = time.monotonic()
    runs = dagd("runs", cwd=daemon.root)
    client = time.monotonic() - started
    # Refused, not waiting for the lock: about as long as a client command's own start-up and
    # request (Python start-up is most of both), measured here so a loaded machine slows both.
    assert elapsed < 3 * client + 2, (elapsed, client)
    assert runs.returncode == 0, runs.stderr
    assert run_id in runs.stdout and "running" in runs.stdout


def test_an_embedded_daemon_beside_a_serving_one_refuses(daemon: DaemonProc) -> None:
    run_id, pids = start_slow_run(daemon)
    token = token_file_identity(daemon)
    config = config_of(daemon)

    async def embed() -> None:
        async with open_daemon(config):
            raise AssertionError("opened a daemon on a state folder in use")

    with pytest.raises(dagd_api.StateDirInUse) as refused:
        trio.run(embed)
    assert refused.value.pid == pid_of(daemon)
    assert str(refused.value) == (
        f"another dagd (pid {pid_of(daemon)}) is using {config.state_dir}; stop it first"
    )
    assert_first_untouched(daemon, run_id, pids, token)


def test_read_only_commands_and_dagd_run_work_beside_a_daemon(daemon: DaemonProc) -> None:
    run_id, pids = start_slow_run(daemon)
    token = token_file_identity(daemon)
    wait_for(
        lambda: (daemon.state / "logs" / "slow" / run_id / "wait.1.out").is_file(),
        what="the step's log",
    )
    logs = dagd("logs", run_id, "wait", cwd=daemon.root)
    assert logs.returncode == 0, logs.stderr
    assert "waiting" in logs.stdout
    for command in (("validate",), ("list",)):
        done = dagd(*command, cwd=daemon.root)
        assert done.returncode == 0, (command, done.stderr)
    # `dagd run` keeps no history and takes no lock: it runs beside the daemon.
    ran = dagd("run", "quick", "--plain", cwd=daemon.root)
    assert ran.returncode == 0, ran.stderr
    assert "another dagd" not in ran.stdout + ran.stderr
    assert_first_untouched(daemon, run_id, pids, token)


def test_after_kill_9_the_next_start_succeeds_at_once_and_recovers(daemon: DaemonProc) -> None:
    normal = daemon.wait_ready()  # the fixture's start, against a fresh state folder
    run_id, pids = start_slow_run(daemon)
    first = pid_of(daemon)
    daemon.stop(signal.SIGKILL)
    assert pids <= step_pids(daemon)  # the step outlived its daemon (recovery's job)
    daemon.start()  # no waiting for a stale lock: the kernel dropped it with the process
    restart = daemon.wait_ready()
    # about as long as a normal start (plus recovery), measured here so load slows both
    assert restart < 3 * normal + 5, (restart, normal)
    assert pid_of(daemon) != first
    assert "another dagd" not in daemon.output()
    assert daemon.run_statuses("slow") == {run_id: "failed"}
    assert daemon.query("SELECT status, error FROM steps WHERE run_id = ?", (run_id,)) == [
        ("failed", INTERRUPTED)
    ]
    assert steps_gone(daemon)  # recovery stopped the dead daemon's step
    lock = (daemon.state / "dagd.lock").read_text().split()
    assert lock[0] == str(pid_of(daemon))


async def test_two_embedded_daemons_in_one_process_refuse(tmp_path: Path) -> None:
    # flock locks belong to the open file, so this process's second open conflicts with its
    # first (POSIX lockf locks would not).
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "quick.toml").write_text(
        '[steps.hello]\ncommand = "echo hello"\n', encoding="utf-8"
    )
    config = parse_config('dags_dir = "dags"\nstate_dir = "state"\n', tmp_path)
    async with open_daemon(config) as first:
        with pytest.raises(dagd_api.StateDirInUse) as refused:
            async with open_daemon(config):
                raise AssertionError("a second daemon opened on the same state folder")
        assert refused.value.pid == os.getpid()
        assert "this process" in str(refused.value) and "\n" not in str(refused.value)
        # The first one is unharmed: it still runs DAGs to the end.
        run_id = await first.trigger("quick")
        record, _ = await wait_status(first, run_id)
        assert record.status is RunStatus.SUCCESS
    async with open_daemon(config):  # free again once the first is closed
        pass


@pytest.fixture
def read_only_state(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/state as an empty read-only tmpfs (needs root, as in CI)."""
    with mounts.tmpfs(tmp_path / "state", "size=1m,ro") as state:
        yield state


def test_serve_on_a_read_only_state_folder_is_one_line(
    tmp_path: Path, read_only_state: Path
) -> None:
    d = DaemonProc(tmp_path, DAGS)
    done = dagd("serve", "--config", str(d.config), cwd=d.root, timeout=20)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot create {read_only_state.resolve() / 'dagd.lock'}: Read-only file "
        f"system; make {read_only_state.resolve()} a folder dagd can write or set state_dir"
    ]
