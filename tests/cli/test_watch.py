"""`dagd watch` as a person sees it: the real command in a tmux pane against a real daemon
that is stopped and started again; and RunsView rendered from a recorded event stream.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from clienthelp import DaemonProc, clean_env
from rich.console import Console

from dagd.cli.render import RunsView
from dagd.client import connect
from dagd.core.events import DagEvent
from dagd.core.protocol.events import event_from_wire

# ------------------------------------------------------ RunsView, unit level

RUN = "manual__2024-05-05T10:00:00.000000+00:00"
RUN2 = "manual__2024-05-05T10:05:00.000000+00:00"


def _ev(kind: str, seq: int, t: str, **data: object) -> str:
    return json.dumps({"type": kind, "seq": seq, "data": {**data, "timestamp": f"{t}Z"}})


def _step(seq: int, t: str, step: str, status: str, **kw: object) -> str:
    fields = {
        "dagId": "etl",
        "runId": RUN,
        "stepId": step,
        "status": status,
        "startTime": None,
        "endTime": None,
        "duration": None,
        "retryCount": 0,
        "error": None,
    }
    fields.update(kw)
    return _ev("step_status", seq, t, **fields)


def _progress(seq: int, t: str, done: int, running: int, failed: int, pending: int) -> str:
    return _ev(
        "dag_run_progress",
        seq,
        t,
        dagId="etl",
        runId=RUN,
        totalSteps=4,
        completedSteps=done,
        runningSteps=running,
        failedSteps=failed,
        pendingSteps=pending,
        completionPercentage=round(100 * done / 4, 1),
    )


S = "2024-05-05T10:00:0"
#: What a client received for one run of a 4-step DAG, up to the moment "load" is running:
#: extract succeeded, transform failed and is retrying, report is pending.
RECORDED = [
    _ev("dag_run_status", 101, f"{S}0.000", dagId="etl", runId=RUN, status="queued"),
    _ev("dag_run_status", 102, f"{S}0.010", dagId="etl", runId=RUN, status="running"),
    _progress(103, f"{S}0.010", 0, 0, 0, 4),
    _step(104, f"{S}0.020", "extract", "running", startTime=f"{S}0.020Z"),
    _step(
        105,
        f"{S}1.270",
        "extract",
        "success",
        startTime=f"{S}0.020Z",
        endTime=f"{S}1.270Z",
        duration=1250,
    ),
    _step(106, f"{S}1.280", "transform", "running", startTime=f"{S}1.280Z"),
    _step(107, f"{S}1.290", "load", "running", startTime=f"{S}1.290Z"),
    _step(
        108,
        f"{S}2.000",
        "transform",
        "retrying",
        startTime=f"{S}1.280Z",
        endTime=f"{S}2.000Z",
        duration=720,
        retryCount=1,
        error="exit code 2: cannot parse row 17",
    ),
    _ev(
        "error",
        109,
        f"{S}2.000",
        dagId="etl",
        runId=RUN,
        stepId="transform",
        error="exit code 2: cannot parse row 17",
    ),
    _step(
        110,
        f"{S}3.000",
        "transform",
        "failed",
        startTime=f"{S}2.500Z",
        endTime=f"{S}3.000Z",
        duration=500,
        retryCount=1,
        error="exit code 2: cannot parse row 17",
    ),
    # No progress event since the start (they are throttled): counts come from step events.
]


def recorded() -> list[DagEvent]:
    return [event_from_wire(json.loads(line)) for line in RECORDED]


def screen(view: RunsView, width: int = 100, height: int = 25) -> str:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(view.render())
    return console.export_text()


def test_runs_view_shows_progress_and_the_steps_that_matter() -> None:
    view = RunsView()
    assert "waiting for runs…" in screen(view)
    for event in recorded():
        view.apply(event)
    text = screen(view)
    lines = text.splitlines()
    assert lines[0].split() == ["▶", "etl", RUN, "running"]
    assert "1/4 done, 1 running, 1 failed, 1 pending" in text
    assert "━" in lines[1]  # the progress bar
    step_lines = {line.split()[1]: line for line in lines[2:] if line.strip()}
    assert set(step_lines) == {"transform", "load"}  # not extract (done) nor report (pending)
    assert step_lines["transform"].split()[:3] == ["✘", "transform", "failed"]
    assert "retry 1" in step_lines["transform"]
    assert "exit code 2: cannot parse row 17" in step_lines["transform"]
    assert step_lines["load"].split() == ["▶", "load", "running"]
    # Failed steps first, then the running ones.
    assert lines.index(step_lines["transform"]) < lines.index(step_lines["load"])
    assert "waiting for runs" not in text


def test_the_disconnected_notice_counts_down_to_the_next_attempt() -> None:
    view = RunsView()
    view.disconnected("cannot connect: Connection refused", 3.2, now=100.0)
    assert view.notice == "disconnected (cannot connect: Connection refused), retrying in 3 s"
    assert screen(view).splitlines()[0] == view.notice
    view.tick(101.0)
    assert view.notice.endswith("retrying in 2 s")
    view.tick(102.3)
    assert view.notice.endswith("retrying in 1 s")
    view.tick(103.3)
    assert view.notice.endswith("retrying now")
    view.disconnected("cannot connect: Connection refused", 4.0, now=104.0)  # next attempt
    assert view.notice.endswith("retrying in 4 s")
    view.reconnected()
    assert view.notice is None
    view.tick(105.0)  # nothing to count down once connected
    assert view.notice is None


def _dag_status(seq: int, dag_id: str, paused: bool, file_error: str | None) -> DagEvent:
    return event_from_wire(
        json.loads(
            _ev(
                "dag_status",
                seq,
                f"{S}5.000",
                dagId=dag_id,
                paused=paused,
                fileError=file_error,
            )
        )
    )


def test_a_file_error_clears_when_the_file_loads_again() -> None:
    view = RunsView()
    error = "dags/etl.toml: step 'a': field 'command': required"
    view.apply(_dag_status(1, "etl", False, error))
    view.apply(_dag_status(2, "report", True, None))
    assert screen(view).splitlines()[0] == f"✘ etl: {error}"
    line = RunsView.line(_dag_status(3, "etl", False, error))
    assert line is not None and line.endswith(
        f"dag etl: active, running the last good version; {error}"
    )
    view.apply(_dag_status(4, "etl", False, None))  # the file was fixed and loaded
    assert "etl" not in screen(view)
    line = RunsView.line(_dag_status(5, "report", True, None))
    assert line is not None and line.endswith("dag report: paused")


def test_runs_view_notice_dag_errors_and_the_finished_run() -> None:
    view = RunsView()
    for event in recorded():
        view.apply(event)
    view.notice = "disconnected (cannot connect: Connection refused), retrying in 4 s"
    done = [
        _step(111, f"{S}4.000", "load", "success", duration=2710),
        _step(112, f"{S}4.000", "report", "upstream_failed"),
        _progress(113, f"{S}4.000", 2, 0, 2, 0),
        _ev("dag_run_status", 114, f"{S}4.000", dagId="etl", runId=RUN, status="failed"),
        json.dumps(
            {
                "type": "error",
                "seq": 115,
                "data": {
                    "dagId": "broken",
                    "runId": None,
                    "stepId": None,
                    "error": "dags/broken.toml: step 'a': field 'command': required",
                    "timestamp": "2024-05-05T10:00:05.000Z",
                },
            }
        ),
    ]
    for line in done:
        view.apply(event_from_wire(json.loads(line)))
    text = screen(view)
    lines = text.splitlines()
    assert lines[0] == view.notice
    assert lines[1] == "✘ broken: dags/broken.toml: step 'a': field 'command': required"
    assert lines[2].split() == ["✘", "etl", RUN, "failed"]
    assert "2/4 done, 0 running, 2 failed, 0 pending" in text
    assert "report" in text and "upstream_failed" in text

    console = Console(record=True, width=100, color_system=None)
    view.summary(view.runs[RUN], console)
    summary = console.export_text().splitlines()
    assert summary[0] == f"etl {RUN}: failed in 4.0s"
    assert summary[1] == "  1 failed, 2 success, 1 upstream_failed"
    assert summary[2] == "  ✘ transform: exit code 2: cannot parse row 17"


def test_runs_view_plain_lines() -> None:
    lines = [RunsView.line(e) for e in recorded()]
    text = [line.split("  ", 1)[1] if line else None for line in lines]
    assert text[0] == f"run etl {RUN}: queued"
    assert text[2] is None  # progress has no line
    assert text[4].split() == ["extract", "success", "(1.2s)"]
    # A retrying step names the retry but not yet the error (the error event does).
    assert text[7].split() == ["transform", "retrying", "(0.7s)", "[retry", "1]"]
    assert text[8] == "error in etl/transform: exit code 2: cannot parse row 17"
    assert text[9].endswith("failed (0.5s) [retry 1]: exit code 2: cannot parse row 17")


def test_runs_view_keeps_the_newest_and_the_active_runs_on_a_full_screen() -> None:
    view = RunsView()
    for event in recorded():  # RUN: active, the oldest
        view.apply(event)
    for n in range(10):  # then ten finished runs
        run_id = f"manual__2024-05-05T11:{n:02d}:00.000000+00:00"
        for line in (
            _ev(
                "dag_run_status",
                200 + 3 * n,
                f"{S}5.000",
                dagId="etl",
                runId=run_id,
                status="running",
            ),
            _ev(
                "dag_run_status",
                201 + 3 * n,
                f"{S}6.000",
                dagId="etl",
                runId=run_id,
                status="success",
            ),
        ):
            view.apply(event_from_wire(json.loads(line)))
    text = screen(view, height=15)
    lines = text.splitlines()
    assert len(lines) <= 15
    assert RUN in text  # the active run stays on screen
    assert "manual__2024-05-05T11:09:00" in text  # so does the newest
    assert "manual__2024-05-05T11:00:00" not in text  # the oldest finished ones go
    hidden = next(line for line in lines if "not shown" in line)
    shown = sum("manual__" in line for line in lines)
    assert hidden == f"… {11 - shown} more run(s) not shown"
    # Runs keep their order on screen.
    ids = [line.split()[2] for line in lines if "manual__" in line]
    assert ids == sorted(ids)
    # With room for everything, nothing is hidden.
    assert "not shown" not in screen(view, height=200)


# ----------------------------------------------------- dagd watch in tmux

WATCH_DAGS = {
    "mixed": """
        [steps.quick]
        command = "true"
        [steps.boom]
        command = "echo bad thing >&2; exit 3"
        [steps.slowstep]
        command = "sleep 20"
        [steps.after]
        command = "true"
        depends_on = ["slowstep"]
    """,
    "quick": """
        [steps.one]
        command = "true"
        [steps.two]
        command = "true"
        depends_on = ["one"]
    """,
}


class Tmux:
    """A private tmux server (its own socket) holding one 120x30 session."""

    def __init__(self) -> None:
        self.socket = f"dagd-test-{uuid.uuid4().hex[:12]}"
        self.session = "watch"
        self.socket_path: Path | None = None
        self.last = ""

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=10,
        )

    def start(self, command: str) -> None:
        result = self.tmux(
            "new-session", "-d", "-s", self.session, "-x", "120", "-y", "30", command
        )
        assert result.returncode == 0, result.stderr
        path = self.tmux("display-message", "-p", "#{socket_path}").stdout.strip()
        self.socket_path = Path(path) if path else None

    def screen(self) -> str:
        result = self.tmux("capture-pane", "-p", "-t", self.session)
        assert result.returncode == 0, result.stderr
        self.last = result.stdout
        return self.last

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() >= deadline:
                raise AssertionError(f"the screen never showed {what}:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        self.tmux("kill-server")
        if self.socket_path is not None:  # tmux leaves the socket file behind
            self.socket_path.unlink(missing_ok=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    with DaemonProc(tmp_path, WATCH_DAGS) as d:
        yield d


def trigger(daemon: DaemonProc, dag_id: str) -> str:
    async def go() -> str:
        async with connect(daemon.url, daemon.token, [dag_id]) as client:
            return await client.trigger(dag_id)

    return trio.run(go)


def line_with(text: str, word: str) -> str:
    return next((line for line in text.splitlines() if word in line.split()), "")


def test_watch_in_a_terminal_across_a_daemon_restart(daemon: DaemonProc, tmux: Tmux) -> None:
    daemon.start()
    daemon.wait_ready()
    tmux.start(f"{sys.executable} -m dagd watch --config {daemon.config}; echo EXITED $?; sleep 60")
    tmux.wait(lambda s: "waiting for runs" in s, "the empty view")

    first = trigger(daemon, "mixed")
    text = tmux.wait(
        lambda s: "1/4 done, 1 running, 1 failed, 1 pending" in s,
        "the run with one step done, one running, one failed",
    )
    head = line_with(text, first)
    assert head.split() == ["▶", "mixed", first, "running"], text
    assert line_with(text, "boom").split()[:3] == ["✘", "boom", "failed"], text
    assert "exit code 3: bad thing" in line_with(text, "boom")
    assert line_with(text, "slowstep").split() == ["▶", "slowstep", "running"], text
    assert "quick" not in text and "after" not in text  # done and pending steps stay quiet
    assert "EXITED" not in text

    daemon.stop()
    text = tmux.wait(
        lambda s: "disconnected" in s and "retrying in" in s, "the disconnected notice"
    )
    notice = text.splitlines()[0]
    assert notice.startswith("disconnected (") and " s" in notice, text
    # The last events before the shutdown arrived: the daemon cancelled the run.
    assert line_with(text, first).split() == ["■", "mixed", first, "cancelled"], text
    assert "1/4 done, 0 running, 3 failed, 0 pending" in text
    assert "cancelled: the daemon is shutting down" in line_with(text, "slowstep")

    daemon.start()
    daemon.wait_ready()
    second = trigger(daemon, "quick")
    text = tmux.wait(
        lambda s: second in s and "2/2 done" in s and "disconnected" not in s,
        "the run triggered after the restart",
        timeout=20,
    )
    assert line_with(text, second).split() == ["✔", "quick", second, "success"], text
    assert line_with(text, first).split() == ["■", "mixed", first, "cancelled"], text
    assert "EXITED" not in text
