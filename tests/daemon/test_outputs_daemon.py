"""Outputs through the daemon (open_daemon, real SQLite, real processes): stored with the step,
answered by get_run, and kept by a run retry for the steps it does not rerun, in memory and
after a restart."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
from daemonhelp import daemon_config, wait_status, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.model import RunStatus, StepStatus

S = StepStatus

# a gives outputs (and counts its runs); b fails on its first try, then hands on what it got.
DAG = """
[steps.a]
command = '''
echo ran >> {count}
echo "n=41" >> "$DAGD_OUTPUT"
printf 'text<<EOF\\ntwo\\nlines\\nEOF\\n' >> "$DAGD_OUTPUT"
'''
[steps.py]
call = "outputfuncs:give"
[steps.b]
command = '''
if [ ! -e {marker} ]; then touch {marker}; echo "not yet" >&2; exit 3; fi
echo "got=$DAGD_OUTPUT_A_N,$DAGD_OUTPUT_PY_COUNT" >> "$DAGD_OUTPUT"
'''
depends_on = ["a", "py"]
"""

A_OUTPUTS = {"n": "41", "text": "two\nlines"}
PY_OUTPUTS = {"count": 3, "label": "a b", "items": [1, "x"], "ok": True, "none": None}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = daemon_config(tmp_path, reload_interval=0.1)
    write_dag_file(
        config.dags_dir,
        "out",
        textwrap.dedent(DAG).format(count=tmp_path / "count", marker=tmp_path / "marker"),
    )
    return config


def stored_outputs(config: Config, run_id: str) -> dict[str, str | None]:
    conn = sqlite3.connect(config.db_path)
    try:
        rows = conn.execute("SELECT step_id, outputs FROM steps WHERE run_id=?", (run_id,))
        return dict(rows.fetchall())
    finally:
        conn.close()


async def test_get_run_answers_outputs_and_a_retry_keeps_those_of_steps_not_rerun(
    config: Config, tmp_path: Path
) -> None:
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("out")
        record, steps = await wait_status(daemon, run_id)
        assert record.status is RunStatus.FAILED
        assert steps["a"].outputs == A_OUTPUTS
        detail = await daemon.run_detail(run_id)
        by_step = {s.step_id: s for s in detail.steps}
        assert by_step["a"].outputs == A_OUTPUTS
        assert by_step["py"].outputs == PY_OUTPUTS
        assert by_step["b"].outputs == {}
        await daemon.retry(run_id)
        record, steps = await wait_status(daemon, run_id)
        assert record.status is RunStatus.SUCCESS
        detail = await daemon.run_detail(run_id)
    assert (tmp_path / "count").read_text() == "ran\n"  # a was not run again
    assert {s.step_id: s.outputs for s in detail.steps} == {
        "a": A_OUTPUTS,
        "py": PY_OUTPUTS,
        "b": {"got": "41,3"},
    }
    assert stored_outputs(config, run_id) == {
        "a": '{"n":"41","text":"two\\nlines"}',
        "py": '{"count":3,"label":"a b","items":[1,"x"],"ok":true,"none":null}',
        "b": '{"got":"41,3"}',
    }


async def test_a_retry_after_a_restart_reads_the_outputs_from_the_store(
    config: Config, tmp_path: Path
) -> None:
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("out")
        record, _ = await wait_status(daemon, run_id)
        assert record.status is RunStatus.FAILED
    async with open_daemon(config) as daemon:
        assert daemon.run_states() == []
        detail = await daemon.run_detail(run_id)  # from the store's rows
        assert {s.step_id: s.outputs for s in detail.steps}["a"] == A_OUTPUTS
        await daemon.retry(run_id)
        record, steps = await wait_status(daemon, run_id)
    assert record.status is RunStatus.SUCCESS
    assert steps["b"].outputs == {"got": "41,3"}
    assert (tmp_path / "count").read_text() == "ran\n"


async def test_a_step_that_runs_again_loses_its_old_outputs(config: Config, tmp_path: Path) -> None:
    write_dag_file(
        config.dags_dir,
        "again",
        textwrap.dedent(
            f"""
            [steps.a]
            command = '''
            if [ ! -e {tmp_path}/second ]; then
              touch {tmp_path}/second; echo "first=1" >> "$DAGD_OUTPUT"; exit 3
            fi
            echo "second=2" >> "$DAGD_OUTPUT"
            '''
            """
        ),
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("again")
        _, steps = await wait_status(daemon, run_id)
        assert steps["a"].status is S.FAILED and steps["a"].outputs is None
        await daemon.retry(run_id)
        _, steps = await wait_status(daemon, run_id)
    assert steps["a"].outputs == {"second": "2"}
