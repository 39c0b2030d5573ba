"""Hostile input reaching a running daemon: DAG files dropped into its folder (hot reload),
params given to trigger, and step output full of control characters. The daemon keeps running
its other DAGs, reports each bad file by name, and stores only printable error text.
Real files, real SQLite, real shell steps (open_daemon)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
from daemonhelp import daemon_config, wait_status, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.events import ErrorEvent
from dagd.daemon.daemon import Daemon, DaemonError

HOSTILE = {
    "deep_arrays": "x = " + "[" * 3000 + "]" * 3000,
    "deep_tables": '[steps.a]\ncommand = "true"\nenv = ' + "{a = " * 3000 + "1" + "}" * 3000,
    "big_timeout": '[steps.a]\ncommand = "true"\ntimeout = ' + "9" * 400,
    "big_backoff": '[steps.a]\ncommand = "true"\nretry_backoff = ' + "9" * 400,
    "big_limit": 'max_active_runs = 1e999\n[steps.a]\ncommand = "true"',
}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return daemon_config(tmp_path, reload_interval=0.05)


def write(config: Config, name: str, data: str | bytes) -> Path:
    return write_dag_file(config.dags_dir, name, data)


async def wait_finished(daemon: Daemon, run_id: str) -> str:
    record, _ = await wait_status(daemon, run_id)
    return str(record.status)


async def test_hot_reload_of_hostile_files_keeps_the_daemon_and_its_runs(
    config: Config, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    write(config, "good", f'[steps.wait]\ncommand = "while [ ! -e {gate} ]; do sleep 0.01; done"\n')
    write(config, "edited", '[steps.a]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        assert set(daemon.dags) == {"good", "edited"}
        in_flight = await daemon.trigger("good")
        await daemon.store.flush()
        reported: dict[str, str] = {}
        with daemon.subscribe() as sub:
            for name, text in HOSTILE.items():
                write(config, name, text)
            write(config, "not_utf8", b"\xff\xfe\x00[steps.a]")
            write(config, "edited", HOSTILE["big_timeout"])  # a good DAG turned hostile
            with trio.fail_after(10):
                async for stored in sub:
                    if isinstance(stored.event, ErrorEvent) and stored.event.run_id is None:
                        reported[stored.event.dag_id] = stored.event.error
                        if len(reported) == len(HOSTILE) + 2:
                            break
        # Every file is reported by name, with its own problem, on one line.
        assert set(reported) == {*HOSTILE, "not_utf8", "edited"}
        for dag_id, error in reported.items():
            assert error.startswith(str(config.dags_dir / f"{dag_id}.toml") + ": ")
            assert "\n" not in error
        assert "nested too deeply" in reported["deep_arrays"]
        assert "field 'timeout'" in reported["big_timeout"]
        assert "not UTF-8" in reported["not_utf8"]
        # The daemon is alive: the in-flight run finishes, the last good version of the
        # edited DAG still runs, and a new DAG file is still picked up.
        gate.touch()
        assert await wait_finished(daemon, in_flight) == "success"
        assert await wait_finished(daemon, await daemon.trigger("edited")) == "success"
        write(config, "later", '\ufeff[steps.a]\ncommand = "true"\n')  # with a BOM
        with trio.fail_after(5):
            while "later" not in daemon.dags:
                await trio.sleep(0.01)
        assert await wait_finished(daemon, await daemon.trigger("later")) == "success"
        assert set(daemon.problems) == {
            str(config.dags_dir / f"{name}.toml") for name in (*HOSTILE, "not_utf8", "edited")
        }


async def test_hostile_params_are_refused_as_invalid_params(config: Config) -> None:
    write(config, "p", '[params]\nday = "x"\n[steps.a]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        for params in (
            {"day": 10**5000},
            {"day": "\ud800"},
            {"day": "a\x00b"},
            {"day": ["list"]},
            {1: "x", "day": "y"},
        ):
            with pytest.raises(DaemonError) as caught:
                await daemon.trigger("p", params)  # type: ignore[arg-type]
            assert caught.value.code == "invalid_params"
        assert await wait_finished(daemon, await daemon.trigger("p", {"day": "ok"})) == "success"


async def test_control_characters_never_reach_error_events_or_the_history(
    config: Config,
) -> None:
    write(
        config,
        "noisy",
        "[steps.a]\ncommand = \"printf 'x\\\\000y\\\\033[2Jz\\\\n' >&2; exit 2\"\n",
    )
    async with open_daemon(config) as daemon:
        with daemon.subscribe() as sub:
            run_id = await daemon.trigger("noisy")
            with trio.fail_after(10):
                async for stored in sub:
                    if isinstance(stored.event, ErrorEvent) and stored.event.run_id == run_id:
                        break
        assert stored.event.error == "exit code 2: x\\x00y\\x1b[2Jz"
        assert await wait_finished(daemon, run_id) == "failed"
    conn = sqlite3.connect(config.db_path)
    try:
        [(error,)] = conn.execute("SELECT error FROM steps WHERE run_id = ?", (run_id,))
    finally:
        conn.close()
    assert error == "exit code 2: x\\x00y\\x1b[2Jz"
