"""Lifecycle handlers run by the engine with real processes, real threads and real sockets:
which run when, what they see, what a failing or slow one does, and notifications through
Apprise to a local HTTP receiver and a local SMTP server.

(The state machine's properties are in tests/core/test_core_runstate.py; a daemon's shutdown
and secrets in its log and store in tests/daemon/test_handlers_daemon.py.)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio

from dagd.core.events import DagRunStatusEvent, ErrorEvent, StepStatusEvent
from dagd.core.model import HandlerKind, RunStatus, StepStatus
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime import notify
from dagd.runtime.engine import RunDriver
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.notify import Notifier, scrub, secrets_of

S = StepStatus
RUN_ID = "manual__2024-01-01T00:00:00.000000+00:00"


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def last(self, step_id: str) -> StepStatusEvent:
        return [e for e in self.events if isinstance(e, StepStatusEvent) and e.step_id == step_id][
            -1
        ]

    def text(self) -> str:
        return repr(self.events)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(
    toml: str,
    *,
    cancel_after: float | None = None,
    handler_grace: float = 5.0,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> tuple[RunState, Recorder]:
    dag = parse_dag(toml, default_id="h")
    state = RunState(dag, RUN_ID, {"out": "x"}, handler_grace=handler_grace)
    recorder = Recorder()
    executor = LocalExecutor(grace=0.3, subreaper=False, base_env=env, log_dir=log_dir)
    driver = RunDriver(state, executor, recorder, notifier=Notifier(base_env=env))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run)
            if cancel_after is not None:
                await trio.sleep(cancel_after)
                driver.cancel()
    return state, recorder


def marking(out: Path) -> str:
    """Four handlers, each leaving a file named after its kind in `out`."""
    return "".join(f'[handlers.{kind}]\ncommand = "touch {out}/{kind}"\n' for kind in HandlerKind)


@pytest.mark.parametrize(
    ("command", "cancel", "status", "ran"),
    [
        ("true", False, RunStatus.SUCCESS, {"on_success", "always"}),
        ("exit 3", False, RunStatus.FAILED, {"on_failure", "always"}),
        ("sleep 30", True, RunStatus.CANCELLED, {"on_cancel", "always"}),
    ],
)
async def test_exactly_the_handlers_of_the_outcome_run_after_the_steps(
    tmp_path: Path, command: str, cancel: bool, status: RunStatus, ran: set[str]
) -> None:
    toml = f'[steps.a]\ncommand = "{command}"\n[steps.b]\ncommand = "true"\ndepends_on = ["a"]\n'
    state, rec = await drive(toml + marking(tmp_path), cancel_after=0.3 if cancel else None)
    assert state.status is status
    assert {p.name for p in tmp_path.iterdir()} == ran
    for kind in HandlerKind:
        final = rec.last(kind.step_id)
        assert final.handler is kind
        assert final.status is (S.SUCCESS if kind.value in ran else S.SKIPPED)
    # Every handler event comes after the last ordinary step's final event, and the run's
    # final status after every handler's.
    order = [e for e in rec.events if isinstance(e, StepStatusEvent | DagRunStatusEvent)]
    last_step = max(
        i for i, e in enumerate(order) if isinstance(e, StepStatusEvent) and e.handler is None
    )
    first_handler_run = min(
        i
        for i, e in enumerate(order)
        if isinstance(e, StepStatusEvent) and e.handler and e.status is S.RUNNING
    )
    assert last_step < first_handler_run
    assert order[-1] == DagRunStatusEvent("h", RUN_ID, status, order[-1].timestamp)
    assert sum(isinstance(e, DagRunStatusEvent) and e.status.finished for e in order) == 1


async def test_a_failing_handler_fails_itself_not_the_run(tmp_path: Path) -> None:
    toml = (
        '[steps.a]\ncommand = "true"\n'
        '[handlers.on_success]\ncommand = "echo no mail server >&2; exit 7"\n'
        f'[handlers.always]\ncommand = "touch {tmp_path}/always"\n'
    )
    state, rec = await drive(toml, log_dir=tmp_path / "logs")
    assert state.status is RunStatus.SUCCESS
    assert state.steps["@on_success"].status is S.FAILED
    assert state.steps["@on_success"].error == "exit code 7: no mail server"
    errors = [e for e in rec.events if isinstance(e, ErrorEvent)]
    assert [(e.step_id, e.error) for e in errors] == [
        ("@on_success", "exit code 7: no mail server")
    ]
    assert (tmp_path / "always").exists()  # the next handler still runs


async def test_a_shell_handler_sees_the_outcome_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    toml = (
        '[steps.a]\ncommand = "echo disk full >&2; exit 2"\n'
        '[steps.b]\ncommand = "true"\n'
        '[steps.c]\ncommand = "exit 1"\n'
        '[steps.d]\ncommand = "true"\ndepends_on = ["a"]\n'
        "[handlers.on_failure]\n"
        f"command = 'env | grep -E \"^DAGD_(RUN|FAILED|STEP_ID|PARAM)\" | sort > {out}'\n"
    )
    state, _ = await drive(toml, log_dir=tmp_path / "logs")
    assert state.status is RunStatus.FAILED
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["DAGD_RUN_STATUS"] == "failed"
    assert env["DAGD_FAILED_STEPS"] == "a c"  # failed ones in DAG order; d is upstream_failed
    assert env["DAGD_FAILED_COUNT"] == "2"
    assert env["DAGD_STEP_ID"] == "@on_failure"
    assert env["DAGD_PARAM_OUT"] == "x"
    doc = json.loads(env["DAGD_RUN_OUTCOME"])
    assert doc["status"] == "failed" and doc["runId"] == RUN_ID and doc["dagId"] == "h"
    assert doc["failedSteps"] == [
        {"stepId": "a", "status": "failed", "error": "exit code 2: disk full"},
        {"stepId": "c", "status": "failed", "error": "exit code 1"},
    ]


async def test_a_python_handler_gets_the_outcome_in_its_context(tmp_path: Path) -> None:
    toml = '[steps.a]\ncommand = "true"\n[handlers.always]\ncall = "handlerfuncs:record"\n'
    state, _ = await drive(toml)
    import handlerfuncs

    outcome = handlerfuncs.seen[RUN_ID]
    assert (outcome.status, outcome.dag_id, outcome.failed) == (RunStatus.SUCCESS, "h", ())
    assert outcome.finished_at >= (outcome.started_at or 0)
    assert state.steps["@always"].status is S.SUCCESS


async def test_cancel_gives_handlers_their_grace_then_stops_them(tmp_path: Path) -> None:
    toml = (
        '[steps.a]\ncommand = "sleep 30"\n'
        f'[handlers.on_cancel]\ncommand = "touch {tmp_path}/started; sleep 30"\n'
        f'[handlers.always]\ncommand = "touch {tmp_path}/always"\n'
    )
    start = trio.current_time()
    state, rec = await drive(toml, cancel_after=0.2, handler_grace=0.5)
    took = trio.current_time() - start
    assert state.status is RunStatus.CANCELLED
    assert (tmp_path / "started").exists()  # it ran ...
    assert state.steps["@on_cancel"].status is S.CANCELLED  # ... and was stopped at the end
    assert state.steps["@on_cancel"].error == "stopped: handler_grace of 0.5s passed"
    assert not (tmp_path / "always").exists()  # no time left for it
    assert state.steps["@always"].status is S.CANCELLED
    assert took < 20  # grace 0.5 s, kill_grace 0.3 s: far from the 30 s sleeps
    assert rec.last("a").status is S.CANCELLED


async def test_stopping_handlers_early_stops_the_running_one_at_once(tmp_path: Path) -> None:
    dag = parse_dag(
        '[steps.a]\ncommand = "exit 1"\n[handlers.on_failure]\ncommand = "sleep 30"\n',
        default_id="h",
    )
    state = RunState(dag, RUN_ID, handler_grace=60)
    driver = RunDriver(state, LocalExecutor(grace=0.3, subreaper=False), Recorder())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver.run)
            while state.steps["@on_failure"].status is not S.RUNNING:
                await trio.sleep(0.01)
            driver.cancel()  # handlers running: the outcome stays, they get 60 s
            await trio.sleep(0.2)
            assert state.steps["@on_failure"].status is S.RUNNING
            driver.stop_handlers("stopped: cancelled again")
    assert state.status is RunStatus.FAILED  # decided before the cancel
    assert state.steps["@on_failure"].status is S.CANCELLED
    assert state.steps["@on_failure"].error == "stopped: cancelled again"


async def test_a_retried_run_runs_its_handlers_again(tmp_path: Path) -> None:
    dag = parse_dag(
        f'[steps.a]\ncommand = "test -e {tmp_path}/ok"\n'
        f"[handlers.always]\ncommand = 'echo $DAGD_RUN_STATUS >> {tmp_path}/log'\n",
        default_id="h",
    )
    state = RunState(dag, RUN_ID)
    executor = LocalExecutor(grace=0.3, subreaper=False)
    with trio.fail_after(10):
        assert await RunDriver(state, executor, Recorder()).run() is RunStatus.FAILED
        (tmp_path / "ok").touch()
        # a retry: as the daemon does it, with a new driver
        assert await RunDriver(state, executor, Recorder()).run() is RunStatus.SUCCESS
    assert (tmp_path / "log").read_text().split() == ["failed", "success"]


# ------------------------------------------------------------------------- notifications


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.received.append((self.path, json.loads(self.rfile.read(length))))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_notification_reaches_a_json_webhook(
    receiver: ThreadingHTTPServer, tmp_path: Path
) -> None:
    port = receiver.server_address[1]
    toml = (
        '[steps.load]\ncommand = "echo table locked >&2; exit 4"\n'
        "[handlers.on_failure]\n"
        f'notify = ["json://127.0.0.1:{port}/hooks/${{HOOK_TOKEN}}"]\n'
        'title = "{dag}: {status}"\n'
        'body = "{run_id} {failed_steps}\\n{errors}"\n'
    )
    env = {"HOOK_TOKEN": "t0ps3cret", "PATH": "/usr/bin:/bin"}
    state, rec = await drive(toml, env=env, log_dir=tmp_path / "logs")
    assert state.status is RunStatus.FAILED
    assert state.steps["@on_failure"].status is S.SUCCESS
    ((path, payload),) = receiver.received  # type: ignore[attr-defined]
    assert path == "/hooks/t0ps3cret"  # $VAR expanded when sent
    assert payload["title"] == "h: failed"
    assert payload["message"] == f"{RUN_ID} load\nload: exit code 4: table locked"
    assert "t0ps3cret" not in rec.text()


async def test_the_default_notification_names_the_run_and_its_errors(
    receiver: ThreadingHTTPServer,
) -> None:
    port = receiver.server_address[1]
    toml = (
        f'[steps.a]\ncommand = "exit 1"\n[handlers.always]\nnotify = ["json://127.0.0.1:{port}"]\n'
    )
    await drive(toml)
    ((_, payload),) = receiver.received  # type: ignore[attr-defined]
    assert payload["title"] == "dagd: h failed"
    first, second = payload["message"].split("\n")
    assert first.startswith(f"Run {RUN_ID} of DAG h: failed after ")
    assert second == "a: exit code 1"


async def test_a_notification_reaches_an_smtp_server() -> None:
    from aiosmtpd.controller import Controller

    class Mailbox:
        def __init__(self) -> None:
            self.messages: list[bytes] = []

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.messages.append(envelope.content)  # type: ignore[attr-defined]
            return "250 OK"

    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        url = (
            f"mailto://127.0.0.1:{smtp.port}?from=dagd@example.com&to=ops@example.com&mode=insecure"
        )
        toml = f'[steps.a]\ncommand = "true"\n[handlers.on_success]\nnotify = ["{url}"]\n'
        state, _ = await drive(toml)
    finally:
        smtp.stop()
    assert state.steps["@on_success"].status is S.SUCCESS
    (message,) = box.messages
    text = message.decode()
    assert "Subject: dagd: h success" in text
    assert "To: ops@example.com" in text
    assert f"Run {RUN_ID} of DAG h: success after" in text


async def test_a_target_that_is_down_fails_the_handler_with_a_redacted_error() -> None:
    port = free_port()  # nothing listens there
    toml = (
        '[steps.a]\ncommand = "true"\n'
        f'[handlers.on_success]\nnotify = ["json://admin:${{PW}}@127.0.0.1:{port}/x?key=${{PW}}"]\n'
    )
    state, rec = await drive(toml, env={"PW": "hunter2hunter2"})
    assert state.status is RunStatus.SUCCESS  # the run is unaffected
    handler = state.steps["@on_success"]
    assert handler.status is S.FAILED
    assert handler.error == (
        f"notify URL 1 (json://127.0.0.1:{port}/...): not delivered: "
        "A Connection error occurred sending JSON notification to 127.0.0.1."
    )
    assert "hunter2" not in rec.text() and "admin" not in rec.text()


async def test_a_slow_target_times_the_notification_out() -> None:
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        toml = (
            '[steps.a]\ncommand = "true"\n'
            f'[handlers.on_success]\nnotify = ["json://127.0.0.1:{port}"]\ntimeout = "0.5s"\n'
        )
        start = trio.current_time()
        state, _ = await drive(toml)
        assert trio.current_time() - start < 5
    assert state.status is RunStatus.SUCCESS
    assert state.steps["@on_success"].status is S.FAILED
    assert state.steps["@on_success"].error.startswith("notify URL 1 (json://127.0.0.1")


def test_percent_escaped_secrets_are_scrubbed_in_their_decoded_form_too() -> None:
    url = "json://us%40er:p%40ss%2Fw0rd@example.com/t%6Fken-part?key=k%20ey1"
    secrets = secrets_of(url)
    said = "login us@er with p@ss/w0rd to token-part, key k ey1 (raw p%40ss%2Fw0rd)"
    assert scrub(said, secrets) == "login *** with *** to ***, key *** (raw ***)"


async def test_a_broken_plugin_s_error_is_logged_scrubbed_without_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(urls: object, *args: object) -> None:
        secret = "s3cr3t@x"  # as the plugin decoded it from the URL
        raise RuntimeError(f"plugin broke on {secret}")

    monkeypatch.setattr(notify, "send", broken)
    toml = '[steps.a]\ncommand = "true"\n[handlers.on_success]\nnotify = ["json://u:s3cr3t%40x@127.0.0.1:9/x"]\n'
    with caplog.at_level(logging.DEBUG, logger=notify.__name__):
        state, rec = await drive(toml)
    assert state.steps["@on_success"].error == "RuntimeError: plugin broke on ***"
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in rec.text()
    assert all(r.exc_info is None for r in caplog.records)
    assert "notification failed: RuntimeError: plugin broke on ***" in caplog.text
