"""DAGs that mix local and Dask steps: through the engine (run_dag), and through a real `dagd
serve` configured with `[executors.dask]`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trio
from clienthelp import dagd, free_port, serving
from conftest import NEEDS_DASK

pytest.importorskip("distributed", reason=NEEDS_DASK)

from distributed import LocalCluster

from dagd.core.config import DaskExecutorConfig
from dagd.core.events import StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime.dask.executor import open_dask_executor
from dagd.runtime.engine import run_dag
from dagd.runtime.executor import executor_registry
from dagd.runtime.local.executor import LocalExecutor


def mixed_dag(data: Path) -> str:
    """prep (local) -> remote (Dask, fails its first attempt) and py (Dask, Python) -> final
    (local)."""
    return textwrap.dedent(
        f"""
        [params]
        day = "monday"
        [env]
        DATA = "{data}"
        [steps.prep]
        command = 'echo prepared > "$DATA"'
        [steps.remote]
        executor = "dask"
        command = '''
        test "$DAGD_ATTEMPT" -ge 2 || {{ echo not yet >&2; exit 1; }}
        echo "$(cat "$DATA") on $DAGD_PARAM_DAY"
        '''
        retries = 1
        depends_on = ["prep"]
        [steps.py]
        executor = "dask"
        call = "stepfuncs:write_log"
        depends_on = ["prep"]
        [steps.final]
        command = "true"
        depends_on = ["remote", "py"]
        """
    )


async def test_a_dag_mixing_local_and_dask_steps_runs_through_the_engine(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    dag = parse_dag(mixed_dag(tmp_path / "data"), default_id="mixed")
    logs = tmp_path / "logs"
    events: list[object] = []
    config = DaskExecutorConfig(dask_cluster.scheduler_address)
    async with open_dask_executor(config, log_dir=logs, grace=0.3) as remote:
        executors = executor_registry(LocalExecutor(log_dir=logs), remote)
        with trio.fail_after(30):
            status = await run_dag(
                RunState(dag, "run-mixed", {"day": "monday"}), executors, events.append
            )
    assert status is RunStatus.SUCCESS
    ends = {
        (e.step_id, e.status): e
        for e in events
        if isinstance(e, StepStatusEvent) and e.status.finished
    }
    workers = set(dask_cluster.scheduler_info["workers"])
    assert ends["remote", StepStatus.SUCCESS].worker in workers
    assert ends["py", StepStatus.SUCCESS].worker in workers
    assert ends["prep", StepStatus.SUCCESS].worker is None  # local steps say nothing
    failed = [
        e for e in events if isinstance(e, StepStatusEvent) and e.step_id == "remote" and e.error
    ]
    assert failed[0].error == "exit code 1: not yet"  # the first attempt; retried
    assert (logs / "mixed/run-mixed/remote.2.out").read_text() == "prepared on monday\n"
    assert (logs / "mixed/run-mixed/py.1.out").read_text() == "hello from py attempt 1\n"


def test_a_daemon_with_executors_dask_runs_remote_steps_and_shows_their_logs(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    dags = {"mixed": mixed_dag(tmp_path / "data")}
    top = f'[executors.dask]\naddress = "{dask_cluster.scheduler_address}"\n'
    with serving(tmp_path, dags, top=top) as daemon:
        result = dagd("trigger", "mixed", "--wait", "--plain", cwd=daemon.root)
        assert result.returncode == 0, result.stderr + daemon.output()
        [run_id] = daemon.run_statuses("mixed")
        assert daemon.run_statuses("mixed")[run_id] == "success"
        logs = dagd("logs", run_id, "remote", cwd=daemon.root)
        assert logs.returncode == 0, logs.stderr
        assert "prepared on monday" in logs.stdout
        assert "not yet" in logs.stdout  # the first attempt's stderr
        workers = set(dask_cluster.scheduler_info["workers"])
        where = {
            data["stepId"]: data.get("worker", "absent")
            for _, body in daemon.stored_events("mixed")
            if body["type"] == "step_status" and (data := body["data"])["status"] == "success"
        }
        assert where["remote"] in workers and where["py"] in workers
        assert where["prep"] == "absent"  # local steps' events are as they always were


def test_a_daemon_whose_scheduler_is_unreachable_still_runs_local_steps(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    dags = {
        "local": '[steps.here]\ncommand = "echo here"\n',
        "remote": '[steps.there]\nexecutor = "dask"\ncommand = "echo there"\n',
    }
    top = f'[executors.dask]\naddress = "{address}"\nconnect_timeout = "0.5s"\n'
    with serving(tmp_path, dags, top=top) as daemon:
        assert dagd("trigger", "local", "--wait", "--plain", cwd=daemon.root).returncode == 0
        result = dagd("trigger", "remote", "--wait", "--plain", cwd=daemon.root)
        assert result.returncode != 0
        assert f"dask scheduler unreachable: {address}" in result.stdout + result.stderr
        output = daemon.output()
    said = [line for line in output.splitlines() if "dask scheduler unreachable" in line]
    assert len(said) == 1, output  # one line, however often it tries again


def test_dagd_run_uses_the_configured_dask_cluster(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "mixed.toml").write_text(mixed_dag(tmp_path / "data"))
    (tmp_path / "config.toml").write_text(
        f'[executors.dask]\naddress = "{dask_cluster.scheduler_address}"\n'
    )
    result = dagd("run", "mixed", "--plain", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no executor named" not in result.stdout + result.stderr
    [run_dir] = (tmp_path / "state" / "logs" / "mixed").iterdir()
    assert "prepared on monday" in (run_dir / "remote.2.out").read_text()
