"""Outputs of steps on the Dask executor: the output file lives on the worker, its contents
come back with the attempt's result; Python steps on workers get and give outputs too."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import trio
from conftest import NEEDS_DASK

pytest.importorskip("distributed", reason=NEEDS_DASK)

from distributed import LocalCluster

from dagd.core.config import DaskExecutorConfig
from dagd.core.events import StepStatusEvent
from dagd.core.model import RunStatus
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime.dask.executor import open_dask_executor
from dagd.runtime.engine import run_dag
from dagd.runtime.executor import executor_registry
from dagd.runtime.local.executor import LocalExecutor

DAG = """
[steps.sh]
executor = "dask"
command = '''
echo "n=7" >> "$DAGD_OUTPUT"
printf 'lines<<EOF\\nfirst\\nsecond\\nEOF\\n' >> "$DAGD_OUTPUT"
'''
[steps.big]
executor = "dask"
call = "outputfuncs:give_big"
depends_on = ["sh"]
[steps.bad]
executor = "dask"
command = 'echo "no good=1" >> "$DAGD_OUTPUT"'
[steps.remote_reader]
executor = "dask"
command = 'echo "got=$DAGD_OUTPUT_SH_N/${#DAGD_OUTPUT_BIG_BLOB}" >> "$DAGD_OUTPUT"'
depends_on = ["big"]
[steps.local_reader]
call = "outputfuncs:seen"
depends_on = ["remote_reader"]
"""


async def test_outputs_travel_from_and_to_dask_workers(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    dag = parse_dag(textwrap.dedent(DAG), default_id="dout")
    events: list[object] = []
    config = DaskExecutorConfig(dask_cluster.scheduler_address)
    async with open_dask_executor(config, log_dir=tmp_path, grace=0.3) as remote:
        executors = executor_registry(LocalExecutor(log_dir=tmp_path), remote)
        with trio.fail_after(30):
            status = await run_dag(RunState(dag, "run-dout"), executors, events.append)
    assert status is RunStatus.FAILED  # `bad` only
    final = {e.step_id: e for e in events if isinstance(e, StepStatusEvent) and e.status.finished}
    assert final["sh"].outputs == {"n": "7", "lines": "first\nsecond"}
    assert final["big"].outputs == {"blob": "b" * 40_000, "upstream": "7"}  # fetched
    assert final["remote_reader"].outputs == {"got": "7/40000"}
    assert final["bad"].error == (
        "outputs of step 'bad': line 1: key 'no good' is not a valid output name (a letter or _,"
        " then letters, digits and _, at most 64)"
    )
    seen = json.loads(final["local_reader"].outputs["seen"])  # type: ignore[index]
    assert seen["remote_reader"] == {"got": "7/40000"}
    assert seen["sh"]["lines"] == "first\nsecond"
