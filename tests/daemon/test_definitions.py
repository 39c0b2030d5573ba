"""Issue 10, item 8: which DAG definition a run uses (docs/dags.md, "Editing a DAG while it
runs"). One rule, the same in memory and after a restart: a run is bound to the definition
current when it was triggered (stored with it), and admission (`max_active_runs`) follows the
current definition. Real DAG files, real shell steps, real SQLite; hot reload through
`Daemon.reload()`; restarts as two `open_daemon` in sequence on one state folder."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from daemonhelp import daemon_config, wait_status, wait_until, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.dagsnapshot import dag_from_json, dag_to_json, dag_version
from dagd.core.model import RunStatus
from dagd.core.spec import parse_dag
from dagd.daemon.daemon import Daemon, DaemonError

# Each step waits until the test creates "<gates>/<its run id>", then appends its version to
# "<out>/<its run id>", so a test decides when each run ends and reads what it ran.
GATED = """
    max_active_runs = {limit}
    [env]
    GATES = "{gates}"
    OUT = "{out}"
    [steps.work]
    command = 'while [ ! -e "$GATES/$DAGD_RUN_ID" ]; do sleep 0.02; done; echo {version} >> "$OUT/$DAGD_RUN_ID"'
"""  # noqa: E501


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # reload_interval: the tests reload themselves, at the moment they choose
    return daemon_config(tmp_path, reload_interval=3600.0, folders=("dags", "gates", "out"))


def write_dag(config: Config, name: str, text: str) -> None:
    """Write dags/<name>.toml so that a reload always sees the change (mtime moves on)."""
    write_dag_file(config.dags_dir, name, textwrap.dedent(text))


def gated(config: Config, limit: int, version: str) -> str:
    root = config.dags_dir.parent
    return GATED.format(limit=limit, gates=root / "gates", out=root / "out", version=version)


def release(config: Config, run_id: str) -> None:
    (config.dags_dir.parent / "gates" / run_id).touch()


def output(config: Config, run_id: str) -> list[str]:
    path = config.dags_dir.parent / "out" / run_id
    return path.read_text().split() if path.exists() else []


def running(daemon: Daemon) -> set[str]:
    return set(daemon.active)


def db_rows(config: Config, sql: str) -> list[tuple]:
    conn = sqlite3.connect(config.db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ----------------------------------------------------------- admission: the current limit


async def test_raising_max_active_runs_starts_the_waiting_runs_at_once(config: Config) -> None:
    write_dag(config, "g", gated(config, 1, "v1"))
    async with open_daemon(config) as daemon:
        runs = [await daemon.trigger("g") for _ in range(3)]
        await wait_until(lambda: running(daemon) == {runs[0]}, 10.0)
        write_dag(config, "g", gated(config, 3, "v1"))
        await daemon.reload()
        assert running(daemon) == set(runs)  # no run had to end for the new limit to apply
        for run_id in runs:
            release(config, run_id)
        for run_id in runs:
            await wait_status(daemon, run_id, {RunStatus.SUCCESS})


async def test_lowering_max_active_runs_holds_the_waiting_runs(config: Config) -> None:
    write_dag(config, "g", gated(config, 2, "v1"))
    async with open_daemon(config) as daemon:
        r1, r2, r3, r4 = [await daemon.trigger("g") for _ in range(4)]
        await wait_until(lambda: running(daemon) == {r1, r2}, 10.0)
        write_dag(config, "g", gated(config, 1, "v1"))
        await daemon.reload()
        assert running(daemon) == {r1, r2}  # a lower limit stops no running run
        release(config, r1)
        await wait_status(daemon, r1, {RunStatus.SUCCESS})
        # r1's slot went, but r2 alone fills the new limit of 1: r3 still waits
        assert running(daemon) == {r2}
        release(config, r2)
        await wait_until(lambda: running(daemon) == {r3}, 10.0)
        # raised again while r4 waits: it starts beside r3 at once
        write_dag(config, "g", gated(config, 2, "v1"))
        await daemon.reload()
        assert running(daemon) == {r3, r4}
        release(config, r3)
        release(config, r4)
        for run_id in (r3, r4):
            await wait_status(daemon, run_id, {RunStatus.SUCCESS})


# ------------------------------------------------------ a run keeps its own definition


async def test_a_waiting_run_keeps_the_definition_it_was_triggered_with(config: Config) -> None:
    write_dag(config, "g", gated(config, 1, "v1"))
    async with open_daemon(config) as daemon:
        first, waiting = await daemon.trigger("g"), await daemon.trigger("g")
        await wait_until(lambda: running(daemon) == {first}, 10.0)
        write_dag(config, "g", gated(config, 1, "v2"))  # edited while `waiting` waits
        await daemon.reload()
        after = await daemon.trigger("g")
        for run_id in (first, waiting, after):
            release(config, run_id)
        for run_id in (first, waiting, after):
            await wait_status(daemon, run_id, {RunStatus.SUCCESS})
        assert [output(config, r) for r in (first, waiting, after)] == [["v1"], ["v1"], ["v2"]]
        # Each run says which version it ran: the one stored with it.
        versions = [await daemon.run_definition(r) for r in (first, waiting, after)]
        assert all(v is not None for v in versions)
        v_first, v_waiting, v_after = (v[0] for v in versions if v is not None)
        assert v_first == v_waiting != v_after
        assert versions[2] is not None and versions[2][1] == daemon.dags["g"]
    # One stored definition per version, not one per run.
    assert db_rows(config, "SELECT count(*) FROM dag_versions") == [(2,)]
    assert sorted(db_rows(config, "SELECT dag_version FROM runs")) == sorted(
        [(v_first,), (v_waiting,), (v_after,)]
    )


FAILING = """
    [env]
    OUT = "{out}"
    [steps.a]
    command = 'echo {version} >> "$OUT/$DAGD_RUN_ID"; exit 1'
"""
# v2 also adds a step: a retry bound to v1 must not run it
FAILING_V2 = (
    FAILING
    + """
    [steps.b]
    command = 'echo b >> "$OUT/$DAGD_RUN_ID"'
"""
)


@asynccontextmanager
async def failed_v1_run(config: Config) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon on `config` with dags/f.toml as FAILING v1, and one run of it that failed."""
    write_dag(config, "f", FAILING.format(out=config.dags_dir.parent / "out", version="v1"))
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("f")
        await wait_status(daemon, run_id, {RunStatus.FAILED})
        yield daemon, run_id


async def test_retry_reruns_the_triggered_definition_before_and_after_a_restart(
    config: Config,
) -> None:
    out = config.dags_dir.parent / "out"
    async with failed_v1_run(config) as (daemon, run_id):
        write_dag(config, "f", FAILING_V2.format(out=out, version="v2"))  # while it failed
        await daemon.reload()
        await daemon.retry(run_id)  # in memory
        await wait_until(lambda: len(output(config, run_id)) >= 2, 10.0)
        await wait_status(daemon, run_id, {RunStatus.FAILED})
    async with open_daemon(config) as daemon:  # a restart on the same state folder
        assert sorted(daemon.dags["f"].steps) == ["a", "b"]  # the file is v2
        await daemon.retry(run_id)  # rebuilt from the store
        await wait_until(lambda: len(output(config, run_id)) >= 3, 10.0)
        await wait_status(daemon, run_id, {RunStatus.FAILED})
        found = await daemon.get_run(run_id)
        assert found is not None and sorted(s.step_id for s in found[1]) == ["a"]
    assert output(config, run_id) == ["v1", "v1", "v1"]


async def test_retry_of_a_run_whose_dag_is_gone_is_refused_in_memory_and_after_a_restart(
    config: Config,
) -> None:
    async with failed_v1_run(config) as (daemon, run_id):
        (config.dags_dir / "f.toml").unlink()
        await daemon.reload()
        with pytest.raises(DaemonError) as in_memory:
            await daemon.retry(run_id)
    async with open_daemon(config) as daemon:
        with pytest.raises(DaemonError) as restored:
            await daemon.retry(run_id)
    assert in_memory.value.code == restored.value.code == "unknown_dag"
    assert output(config, run_id) == ["v1"]


# ------------------------------------------------------------ the stored form itself


def test_the_stored_definition_reads_back_as_the_same_dag() -> None:
    dag = parse_dag(
        textwrap.dedent(
            """
            schedule = "@daily"
            max_active_runs = 3
            max_active_steps = 2
            tags = ["x"]
            [params]
            day = "mon"
            [env]
            A = "1"
            [steps.one]
            command = ["echo", "hi"]
            retries = 2
            retry_delay = "1s"
            timeout = "5m"
            [steps.two]
            call = "mod:fn"
            depends_on = ["one"]
            trigger_rule = "all_done"
            """
        ),
        "dags/x.toml",
        default_id="x",
    )
    text = dag_to_json(dag)
    assert dag_from_json(text) == dag
    assert dag_to_json(dag_from_json(text)) == text  # the version is stable
    assert len(dag_version(text)) == 64
