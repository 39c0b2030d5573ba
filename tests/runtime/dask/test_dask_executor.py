"""The Dask executor against a real LocalCluster (two worker processes, conftest.py): shell and
Python steps, params and env on the worker, logs streamed back, timeout and cancel killing the
remote process group, and crash recovery of remote leftovers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from clienthelp import await_for
from conftest import NEEDS_DASK, SECRET_VAR, alive, context, pids_from, shell

pytest.importorskip("distributed", reason=NEEDS_DASK)

from distributed import LocalCluster

from dagd.core.config import DaskExecutorConfig
from dagd.core.model import StepSpec
from dagd.runtime.dask.connection import security
from dagd.runtime.dask.executor import DaskExecutor, open_dask_executor
from dagd.runtime.dask.logsink import LogSinks
from dagd.runtime.executor import AttemptResult, Leftover, LeftoverHandle, StepContext

GRACE = 0.5


@pytest.fixture
async def executor(dask_cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[DaskExecutor]:
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    async with open_dask_executor(config, log_dir=tmp_path / "logs", grace=GRACE) as ex:
        yield ex


def log_text(ex: DaskExecutor, ctx: StepContext, stream: str = "out") -> str:
    assert ex.log_dir is not None
    path = ex.log_dir / ctx.dag_id / ctx.run_id / f"{ctx.step_id}.{ctx.attempt}.{stream}"
    return path.read_text() if path.exists() else ""


# ----------------------------------------------------------------- shell steps


async def test_a_shell_step_runs_on_a_worker_with_its_params_and_env(
    executor: DaskExecutor, dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    step = shell(
        "greet",
        f'echo "$GREETING $DAGD_PARAM_WHO from $DAGD_STEP_ID/$DAGD_ATTEMPT in $(pwd)"; '
        f'echo "secret=${{{SECRET_VAR}:-unset}}"',
        env={"GREETING": "hello"},
        cwd=str(tmp_path),
    )
    ctx = context("greet", who="world")
    result = await executor.run(step, ctx)
    assert result.ok, result
    assert result.worker in dask_cluster.scheduler_info["workers"]
    assert log_text(executor, ctx) == (f"hello world from greet/1 in {tmp_path}\nsecret=unset\n")


async def test_env_expands_against_the_workers_passed_variables_not_the_daemons(
    executor: DaskExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/dask.md: "$VAR in env" (a local step would see the daemon's DAEMON_ONLY).
    monkeypatch.setenv("DAGD_TEST_DAEMON_ONLY", "daemon-value")
    step = shell(
        "env",
        'echo "$P|$S|$D|$N"',
        env={"P": "$PATH", "S": f"${SECRET_VAR}", "D": "$DAGD_TEST_DAEMON_ONLY", "N": "${P}:x"},
    )
    ctx = context("env")
    result = await executor.run(step, ctx)
    assert result.ok, result
    path = os.environ["PATH"]  # the workers' own (they inherit this process's)
    assert log_text(executor, ctx) == f"{path}|||{path}:x\n"


async def test_a_failing_shell_step_says_its_exit_code_and_last_stderr_line(
    executor: DaskExecutor,
) -> None:
    ctx = context("fail")
    result = await executor.run(
        shell("fail", "echo partial; echo first >&2; echo 'the last words' >&2; exit 3"), ctx
    )
    assert not result.ok and not result.timed_out
    assert result.error == "exit code 3: the last words"
    assert log_text(executor, ctx) == "partial\n"
    assert log_text(executor, ctx, "err") == "first\nthe last words\n"


async def test_a_command_that_cannot_start_fails_with_a_message(executor: DaskExecutor) -> None:
    missing = StepSpec("x", command=("/no/such/program",), executor="dask")
    result = await executor.run(missing, context("x"))
    assert result.error == "cannot start '/no/such/program': No such file or directory"


async def test_large_output_arrives_whole_in_bounded_chunks(executor: DaskExecutor) -> None:
    ctx = context("big")
    # 200,000 lines (~1.3 MB): many 16 KiB events, in order.
    result = await executor.run(shell("big", "seq 1 200000"), ctx)
    assert result.ok, result
    text = log_text(executor, ctx)
    assert text == "".join(f"{i}\n" for i in range(1, 200001))


# ---------------------------------------------------------------- Python steps


@pytest.mark.parametrize(
    ("func", "ok", "error"),
    [
        ("noop", True, None),  # async: under trio.run on the worker
        ("sync_noop", True, None),
        ("raise_value_error", False, "ValueError: bad value in py"),
        ("async_raise_runtime_error", False, "RuntimeError: async boom"),
        ("no_such_function", False, "module 'stepfuncs' has no attribute 'no_such_function'"),
    ],
)
async def test_python_steps_run_on_a_worker(
    executor: DaskExecutor, func: str, ok: bool, error: str | None
) -> None:
    result = await executor.run(
        StepSpec("py", call=f"stepfuncs:{func}", executor="dask"), context("py")
    )
    assert result.worker is not None and result.worker.startswith("tcp://127.0.0.1:")
    if func == "no_such_function":  # what the worker could not find says where it was
        error = f"on dask worker {result.worker}: {error}"
    assert (result.ok, result.error) == (ok, error)


async def test_a_module_missing_on_the_worker_says_which_worker(executor: DaskExecutor) -> None:
    step = StepSpec("py", call="dagd_no_such_module:main", executor="dask")
    result = await executor.run(step, context("py"))
    assert result.worker is not None
    assert (result.ok, result.error) == (
        False,
        f"on dask worker {result.worker}: cannot import module 'dagd_no_such_module': "
        "No module named 'dagd_no_such_module'",
    )


@pytest.mark.parametrize(
    ("func", "last_line"),
    [
        ("raise_value_error", "ValueError: bad value in py"),
        ("async_raise_runtime_error", "RuntimeError: async boom"),
        ("no_such_function", "dagd: cannot call 'stepfuncs:no_such_function': module 'stepfuncs'"),
    ],
)
async def test_a_failed_python_steps_traceback_reaches_the_daemons_stderr_log(
    executor: DaskExecutor, func: str, last_line: str
) -> None:
    # As for a local step (python.py): the traceback starts at the step's own code.
    ctx = context("py")
    result = await executor.run(StepSpec("py", call=f"stepfuncs:{func}", executor="dask"), ctx)
    assert not result.ok
    text = log_text(executor, ctx, "err")
    assert text.splitlines()[-1].startswith(last_line), text
    if func != "no_such_function":
        assert text.startswith("Traceback (most recent call last):\n"), text
        assert 'stepfuncs.py", line' in text.splitlines()[1], text


async def test_a_python_steps_log_lines_reach_the_daemons_log_file(
    executor: DaskExecutor,
) -> None:
    ctx = context("py")
    result = await executor.run(StepSpec("py", call="stepfuncs:write_log", executor="dask"), ctx)
    assert result.ok, result
    assert log_text(executor, ctx) == "hello from py attempt 1\n"


async def test_an_async_python_step_times_out_on_the_worker(executor: DaskExecutor) -> None:
    step = StepSpec("py", call="stepfuncs:sleep_forever", executor="dask", timeout=0.3)
    result = await executor.run(step, context("py"))
    assert (result.ok, result.timed_out, result.error) == (False, True, "timed out after 0.3s")


# ---------------------------------------------------------------- stopping


async def test_a_timeout_kills_the_steps_process_group_on_the_worker(
    executor: DaskExecutor, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    step = shell("slow", f"sleep 300 & echo $$ $! > {pids}; wait", timeout=2.0)
    with trio.fail_after(15):
        result = await executor.run(step, context("slow"))
    assert (result.ok, result.timed_out, result.error) == (False, True, "timed out after 2s")
    assert result.worker is not None
    assert alive(await pids_from(pids)) == []


async def test_cancel_kills_the_remote_process_group_before_run_returns(
    executor: DaskExecutor, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    ctx = context("long")
    # Output arrives while the step runs (streamed), then it waits forever.
    step = shell("long", f"echo started; sleep 300 & echo $$ $! > {pids}; wait")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, step, ctx)
            found = await pids_from(pids)
            await await_for(lambda: log_text(executor, ctx) == "started\n", 5)
            assert alive(found) == found
            scope.cancel()
    assert alive(found) == []


async def test_kill_now_cuts_the_grace_period_of_a_stop_short(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    # A step that ignores SIGTERM, cancelled with a long grace period, then a second signal.
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    pids = tmp_path / "pids"
    step = shell("stubborn", f"trap '' TERM; sleep 300 & echo $$ $! > {pids}; wait; wait")
    async with open_dask_executor(config, grace=30.0) as ex:
        step_scope = trio.CancelScope()

        async def run() -> None:
            with step_scope:
                await ex.run(step, context("stubborn"))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                found = await pids_from(pids)
                step_scope.cancel()  # the first signal: SIGTERM, which the step ignores
                await trio.sleep(0.2)
                start = trio.current_time()
                ex.kill_now()
                await await_for(lambda: alive(found) == [], 5)
                assert trio.current_time() - start < 2.0


async def test_a_result_that_cannot_be_fetched_says_the_connection_was_lost(
    dask_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result event goes missing, and the connection is gone when the daemon falls
    back to fetching the task's result."""
    on_event = LogSinks.on_event

    def drop_results(self: LogSinks, event: tuple[float, Any]) -> None:
        if "result" not in event[1]:
            on_event(self, event)

    monkeypatch.setattr(LogSinks, "on_event", drop_results)
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    async with open_dask_executor(config, grace=GRACE, check_interval=3600) as ex:
        client = await ex.connection.usable()
        assert client is not None
        results: list[AttemptResult] = []

        async def run() -> None:
            results.append(await ex.run(shell("quick", "true"), context("quick")))

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await trio.sleep(0.5)  # done on its worker; the daemon awaits the result event
                await trio.to_thread.run_sync(client.close)
    assert results == [
        AttemptResult(False, f"dask scheduler connection lost: {config.address}", worker=None)
    ]


async def test_crash_recovery_stops_the_remote_leftovers_of_interrupted_runs(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A daemon that dies leaves its remote step running; the next one's clean-up stops it."""
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    pids = tmp_path / "pids"
    ctx = context("left")
    handles: list[LeftoverHandle] = []
    step = shell("left", f"sleep 300 & echo $$ $! > {pids}; wait")
    # The first "daemon" never looks at its connection again once it is gone (a dead
    # daemon stops nothing).
    async with (
        open_dask_executor(config, grace=GRACE, check_interval=3600) as first,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(first.run, step, ctx, lambda c, h: handles.append(h))
        found = await pids_from(pids)
        client = first.connection.client
        assert client is not None
        await trio.to_thread.run_sync(client.close)  # the daemon "dies"
    assert alive(found) == found  # the step lives on without its daemon
    assert handles == [
        {"executor": "dask", "key": f"dagd/{ctx.run_id}/left/1", "scheduler": config.address}
    ]
    async with open_dask_executor(config, grace=GRACE) as second:
        await second.connection.usable()
        await second.clean_up([Leftover(ctx.run_id, "left", handles[0])], {ctx.run_id})
        await await_for(lambda: alive(found) == [], 5)


async def test_a_step_stopped_before_it_starts_never_runs(
    executor: DaskExecutor, tmp_path: Path
) -> None:
    """Cancelled while queued behind busy workers: it must not start later."""
    marker = tmp_path / "ran"
    blockers = [shell(f"b{i}", "sleep 2") for i in range(4)]  # 2 workers x 2 threads
    async with trio.open_nursery() as nursery:
        for step in blockers:
            nursery.start_soon(executor.run, step, context(step.id))
        await trio.sleep(0.3)
        with trio.move_on_after(0.3):
            await executor.run(shell("late", f"touch {marker}"), context("late"))
        nursery.cancel_scope.cancel()
    await trio.sleep(1.0)
    assert not marker.exists()


async def test_a_step_cut_off_by_a_lost_connection_is_stopped_once_it_returns(
    dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The client loses the scheduler (here: it is closed under the executor) while a step
    runs: the attempt fails at once, and once connected again dagd stops it on its worker."""
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    pids = tmp_path / "pids"
    results: list[AttemptResult] = []
    step = shell("cut", f"sleep 300 & echo $$ $! > {pids}; wait")
    async with open_dask_executor(
        config, grace=GRACE, reconnect_interval=0.5, check_interval=0.05
    ) as ex:

        async def run() -> None:
            results.append(await ex.run(step, context("cut")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            found = await pids_from(pids)
            client = ex.connection.client
            assert client is not None
            await trio.to_thread.run_sync(client.close)
        address = dask_cluster.scheduler_address
        assert results == [AttemptResult(False, f"dask scheduler connection lost: {address}")]
        await await_for(lambda: alive(found) == [], 10)
        assert ex.connection.client is not None  # connected again


async def test_another_daemon_connecting_leaves_running_steps_alone(
    executor: DaskExecutor, dask_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Connecting registers the worker plugin again, which replaces the old one: that must
    not look like a closing worker."""
    pids = tmp_path / "pids"
    config = DaskExecutorConfig(dask_cluster.scheduler_address, connect_timeout=5.0)
    step = shell("stay", f"sleep 300 & echo $$ $! > {pids}; wait")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor.run, step, context("stay"))
        found = await pids_from(pids)
        async with open_dask_executor(config) as other:
            assert await other.connection.usable() is not None
        await trio.sleep(0.3)
        assert alive(found) == found
        nursery.cancel_scope.cancel()
    assert alive(found) == []


def test_the_tls_settings_become_dasks_security_with_encryption_required(tmp_path: Path) -> None:
    assert security(DaskExecutorConfig("tcp://10.0.0.5:8786")) is None
    config = DaskExecutorConfig(
        "tls://10.0.0.5:8786",
        tls_ca_file=tmp_path / "ca.pem",
        tls_client_cert=tmp_path / "client.pem",
        tls_client_key=tmp_path / "client.key",
    )
    found = security(config)
    assert found is not None
    assert found.require_encryption
    assert (found.tls_ca_file, found.tls_client_cert, found.tls_client_key) == (
        str(tmp_path / "ca.pem"),
        str(tmp_path / "client.pem"),
        str(tmp_path / "client.key"),
    )
