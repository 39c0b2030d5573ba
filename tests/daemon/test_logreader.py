"""Daemon.read_log: a step attempt's log by byte range, whether the attempt is over, and
clear errors for what does not exist. Real DAG files, real shell steps, real SQLite."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import trio
from daemonhelp import daemon_config, wait_status, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.logslice import MAX_LOG_READ
from dagd.daemon.daemon import Daemon, DaemonError


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return daemon_config(tmp_path, reload_interval=60)


def gated_dag(config: Config, gate: Path, *, retries: int = 0) -> None:
    """DAG 'logs': step 'talk' prints a line, waits for `gate` to exist, prints more (stdout
    and stderr), then fails while `gate` holds 'fail'."""
    write_dag_file(
        config.dags_dir,
        "logs",
        textwrap.dedent(
            f"""
            [steps.talk]
            command = '''
            echo "first $DAGD_ATTEMPT"
            while [ ! -s {gate} ]; do sleep 0.01; done
            printf 'second\\n'
            echo oops >&2
            if grep -q fail {gate}; then : > {gate}; exit 3; fi
            '''
            retries = {retries}
            retry_delay = "0s"
            [steps.after]
            command = "true"
            depends_on = ["talk"]
            """
        ),
    )


async def read_all(daemon: Daemon, run_id: str, step: str, **kw: object) -> bytes:
    out = b""
    while True:
        piece = await daemon.read_log(run_id, step, offset=len(out), **kw)  # type: ignore[arg-type]
        out += piece.data
        if not piece.data:
            return out


async def wait_for_bytes(daemon: Daemon, run_id: str, size: int, attempt: int = 1) -> None:
    with trio.fail_after(10):
        while True:
            try:
                if (await daemon.read_log(run_id, "talk", attempt)).size >= size:
                    return
            except DaemonError as exc:
                assert exc.code == "unknown_attempt"  # not started yet
            await trio.sleep(0.01)


async def test_a_running_attempt_then_its_final_log(config: Config, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gated_dag(config, gate)
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("logs")
        await wait_for_bytes(daemon, run_id, len(b"first 1\n"))
        live = await daemon.read_log(run_id, "talk")
        assert (live.attempt, live.data, live.size, live.final) == (1, b"first 1\n", 8, False)
        assert not live.at_end
        # A stream that wrote nothing yet has no file: no bytes, size 0, not over.
        err = await daemon.read_log(run_id, "talk", stream="err")
        assert (err.data, err.size, err.final) == (b"", 0, False)
        # From a middle offset, and a length that cuts the line.
        middle = await daemon.read_log(run_id, "talk", 1, "out", offset=2, length=3)
        assert (middle.data, middle.next_offset) == (b"rst", 5)
        gate.write_text("go")
        await wait_status(daemon, run_id)
        done = await daemon.read_log(run_id, "talk", offset=live.next_offset)
        assert (done.data, done.final, done.at_end) == (b"second\n", True, True)
        assert (await daemon.read_log(run_id, "talk", stream="err")).data == b"oops\n"
        # Past the end of a final log: nothing, and at its end.
        past = await daemon.read_log(run_id, "talk", offset=10_000)
        assert (past.data, past.at_end) == (b"", True)
        # A step that ran but wrote nothing: its attempt exists, its logs are empty and over.
        quiet = await daemon.read_log(run_id, "after")
        assert (quiet.attempt, quiet.data, quiet.size, quiet.at_end) == (1, b"", 0, True)
    # After a restart the run is only in the store: the same answers.
    async with open_daemon(config) as daemon:
        assert await read_all(daemon, run_id, "talk") == b"first 1\nsecond\n"
        stored = await daemon.read_log(run_id, "talk", stream="err")
        assert (stored.data, stored.at_end) == (b"oops\n", True)


async def test_attempts_are_read_one_by_one(config: Config, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("fail")
    gated_dag(config, gate, retries=1)
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("logs")
        await wait_for_bytes(daemon, run_id, len(b"first 2\n"), attempt=2)
        first = await daemon.read_log(run_id, "talk", 1)
        assert (first.data, first.at_end) == (b"first 1\nsecond\n", True)
        latest = await daemon.read_log(run_id, "talk")
        assert (latest.attempt, latest.data, latest.final) == (2, b"first 2\n", False)
        with pytest.raises(DaemonError) as exc:
            await daemon.read_log(run_id, "talk", 3)
        assert exc.value.code == "unknown_attempt"
        assert "attempts: 1-2" in exc.value.message
        gate.write_text("go")
        await wait_status(daemon, run_id)
        assert (await daemon.read_log(run_id, "talk", 2, offset=8)).data == b"second\n"


async def test_unknown_and_hostile_ids_are_refused(config: Config, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("go")
    gated_dag(config, gate)
    # A file outside the log folder that a path built from a hostile id would reach.
    secret = tmp_path / "secret.1.out"
    secret.write_text("secret")
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("logs")
        await wait_status(daemon, run_id)
        cases = [
            ("nope", "talk", None, "unknown_run"),
            ("../../..", "talk", None, "unknown_run"),
            (f"{run_id}/../..", "talk", None, "unknown_run"),
            (run_id, "nope", None, "unknown_step"),
            (run_id, "../../../secret", None, "unknown_step"),
            (run_id, "talk/../../x", None, "unknown_step"),
            (run_id, "\x00", None, "unknown_step"),
            (run_id, "talk", 0, "unknown_attempt"),
            (run_id, "talk", 2, "unknown_attempt"),
        ]
        for run, step, attempt, code in cases:
            with pytest.raises(DaemonError) as exc:
                await daemon.read_log(run, step, attempt)
            assert exc.value.code == code, (run, step, attempt)
        for kw in ({"stream": "../x"}, {"offset": -1}, {"length": 0}, {"length": MAX_LOG_READ + 1}):
            with pytest.raises(DaemonError) as exc:
                await daemon.read_log(run_id, "talk", **kw)  # type: ignore[arg-type]
            assert exc.value.code == "invalid_message"


async def test_a_step_that_has_not_run_yet(config: Config, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gated_dag(config, gate)
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("logs")
        await wait_for_bytes(daemon, run_id, 1)
        with pytest.raises(DaemonError) as exc:
            await daemon.read_log(run_id, "after")
        assert (exc.value.code, exc.value.message) == (
            "unknown_attempt",
            f"step 'after' of run {run_id!r} has not run yet",
        )
        gate.write_text("go")
        await wait_status(daemon, run_id)


async def test_what_is_not_a_regular_file_is_never_opened(config: Config, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("go")
    gated_dag(config, gate)
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("logs")
        await wait_status(daemon, run_id)
        err = config.log_dir / "logs" / run_id / "talk.1.err"
        err.unlink()
        os.mkfifo(err)  # reading it would block a thread for ever
        with trio.fail_after(5):
            piece = await daemon.read_log(run_id, "talk", stream="err")
        assert (piece.data, piece.size, piece.at_end) == (b"", 0, True)
