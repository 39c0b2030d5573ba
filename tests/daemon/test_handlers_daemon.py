"""Lifecycle handlers in a real `dagd serve` process: a shutdown runs a cancelled run's
on_cancel and always handlers within `handler_grace`, a second signal stops them at once, and
a notification's secrets (from the daemon's environment) reach the target but never its log,
its events or its state file.

Runs are fired as in tests/daemon/test_signals.py: a yearly schedule whose last slot is 400
days old (clienthelp.add_marked_dag), so the daemon starts one run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import proctools as procs
import pytest
import trio
from clienthelp import add_marked_dag, poll_until, query_state
from daemonhelp import daemon_config, wait_status, wait_until, write_dag_file

from dagd.app import open_daemon


@pytest.fixture
def mark() -> Iterator[str]:
    mark = procs.new_mark()
    yield mark
    for pid in procs.live_processes(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Daemon:
    """`dagd serve` on `root` (killed at the end of the test if still alive)."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = root / "dagd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dagd", "serve", "--no-websocket", *args],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def setup(root: Path, mark: str, command: str, handlers: str, grace: str) -> None:
    (root / "dags").mkdir()
    (root / "config.toml").write_text(
        'dags_dir = "dags"\nstate_dir = "state"\nkill_grace = "0.3s"\nprogress_interval = 0\n'
        f'handler_grace = "{grace}"\n'
    )
    add_marked_dag(root, "h", mark, command)
    with open(root / "dags" / "h.toml", "a") as f:
        f.write(handlers)


def steps(root: Path) -> dict[str, tuple[str, str | None]]:
    return {sid: (status, error) for sid, status, error in query_state(
        root, "SELECT step_id, status, error FROM steps"
    )}  # fmt: skip


def test_a_shutdown_runs_on_cancel_and_always_within_the_grace(
    tmp_path: Path, mark: str, daemons: list[Daemon]
) -> None:
    handlers = (
        f"[handlers.on_cancel]\ncommand = 'echo \"$DAGD_RUN_STATUS\" > {tmp_path}/on_cancel'\n"
        f"[handlers.on_failure]\ncommand = 'touch {tmp_path}/on_failure'\n"
        "[handlers.always]\n"
        f"command = 'touch {tmp_path}/always; sleep 3007'\n"
    )
    setup(tmp_path, mark, "sleep 3006", handlers, grace="1s")
    daemon = Daemon(tmp_path)
    daemons.append(daemon)
    assert poll_until(lambda: procs.live_processes(mark), 20), daemon.output()
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0, daemon.output()
    # kill_grace 0.3 s for the step, 1 s of handler grace, 0.3 s to stop the handler
    assert time.monotonic() - sent < 15
    assert (tmp_path / "on_cancel").read_text() == "cancelled\n"
    assert (tmp_path / "always").exists()
    assert not (tmp_path / "on_failure").exists()
    assert query_state(tmp_path, "SELECT status FROM runs") == [("cancelled",)]
    found = steps(tmp_path)
    assert found["work"][0] == "cancelled"
    assert found["@on_cancel"] == ("success", None)
    assert found["@on_failure"][0] == "skipped"
    assert found["@always"] == ("cancelled", "stopped: handler_grace of 1s passed")
    assert procs.wait_gone(mark, 3.0) == []


def test_a_second_signal_stops_the_handlers_at_once(
    tmp_path: Path, mark: str, daemons: list[Daemon]
) -> None:
    handlers = f"[handlers.always]\ncommand = 'touch {tmp_path}/always; sleep 3007'\n"
    setup(tmp_path, mark, "sleep 3006", handlers, grace="60s")
    daemon = Daemon(tmp_path)
    daemons.append(daemon)
    assert poll_until(lambda: procs.live_processes(mark), 20), daemon.output()
    daemon.proc.send_signal(signal.SIGTERM)
    assert poll_until(lambda: (tmp_path / "always").exists(), 20), daemon.output()
    assert daemon.proc.poll() is None  # the handler has 60 s
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0, daemon.output()
    assert time.monotonic() - sent < 15  # not 60 s
    assert query_state(tmp_path, "SELECT status FROM runs") == [("cancelled",)]
    assert steps(tmp_path)["@always"] == ("cancelled", "stopped: dagd was told to stop again")
    assert procs.wait_gone(mark, 3.0) == []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.received.append((self.path, json.loads(self.rfile.read(length))))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_notification_secrets_stay_out_of_the_log_the_events_and_the_store(
    tmp_path: Path, mark: str, daemons: list[Daemon]
) -> None:
    secret = "s3cr3t-hook-token-0042"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    port = server.server_address[1]
    handlers = (
        "[handlers.on_success]\n"
        f'notify = ["json://127.0.0.1:{port}/hook/${{HOOK_SECRET}}?token=${{HOOK_SECRET}}"]\n'
        "[handlers.always]\n"
        f'notify = ["json://admin:${{HOOK_SECRET}}@127.0.0.1:{closed}/x/${{HOOK_SECRET}}"]\n'
    )
    try:
        setup(tmp_path, mark, "true", handlers, grace="5s")
        daemon = Daemon(tmp_path, "--verbose", env={"HOOK_SECRET": secret})
        daemons.append(daemon)
        over = "SELECT status FROM runs WHERE status NOT IN ('queued', 'running')"
        finished = poll_until(lambda: query_state(tmp_path, over), 30)
        assert finished == [("success",)], daemon.output()  # a failed handler changes nothing
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(20) == 0, daemon.output()
    finally:
        server.shutdown()
        server.server_close()
    ((path, payload),) = server.received  # type: ignore[attr-defined]
    assert path.startswith(f"/hook/{secret}")  # expanded from the daemon's environment
    assert payload["title"] == "dagd: h success"
    found = steps(tmp_path)
    assert found["@on_success"] == ("success", None)
    assert found["@always"][0] == "failed"
    assert found["@always"][1].startswith(f"notify URL 1 (json://127.0.0.1:{closed}/...): ")
    # Nowhere: the daemon's log (debug level), the event log and rows, the step logs.
    assert secret not in daemon.output()
    assert "admin" not in daemon.output()
    for path_ in (tmp_path / "state").rglob("*"):
        if path_.is_file():
            assert secret.encode() not in path_.read_bytes(), path_


async def test_cancelling_a_run_twice_stops_its_handlers_and_get_run_shows_them(
    tmp_path: Path,
) -> None:
    config = attrs.evolve(daemon_config(tmp_path, reload_interval=60), handler_grace=60.0)
    write_dag_file(
        config.dags_dir,
        "h",
        '[steps.a]\ncommand = "exit 1"\n'
        '[handlers.on_failure]\ncommand = "sleep 30"\n'
        '[handlers.always]\ncommand = "true"\n',
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("h")
        await wait_until(
            lambda: daemon.active[run_id].state.steps["@on_failure"].status.value == "running"
        )
        await daemon.cancel(run_id)  # its handlers run: they get handler_grace (60 s)
        await trio.sleep(0.3)
        detail = await daemon.run_detail(run_id)
        assert detail.record.status.value == "running"
        by_id = {s.step_id: s for s in detail.steps}
        assert [s.step_id for s in detail.steps] == ["a", "@on_failure", "@always"]
        assert by_id["@on_failure"].status.value == "running"
        assert by_id["@on_failure"].handler is not None
        await daemon.cancel(run_id)  # again: they stop now
        record, rows = await wait_status(daemon, run_id)
    assert record.status.value == "failed"  # decided before the cancels
    assert rows["@on_failure"].status.value == "cancelled"
    assert rows["@on_failure"].error == "stopped: cancelled by user, again"
    assert rows["@always"].status.value == "cancelled"
