"""Failures of the cluster under the Dask executor, each on a small cluster of its own: a worker
killed with SIGKILL mid-step, the scheduler down at start and coming back, the connection lost
while a step runs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trio
from clienthelp import await_for, free_port
from conftest import NEEDS_DASK, alive, context, local_cluster, pids_from, shell

pytest.importorskip("distributed", reason=NEEDS_DASK)

from dagd.core.config import DaskExecutorConfig
from dagd.runtime.dask.executor import _run_on, open_dask_executor
from dagd.runtime.executor import AttemptResult


async def test_a_worker_killed_mid_step_fails_the_attempt_and_its_processes_are_reaped(
    tmp_path: Path,
) -> None:
    with local_cluster(1) as cluster:
        config = DaskExecutorConfig(cluster.scheduler_address, connect_timeout=5.0)
        pids = tmp_path / "pids"
        results: list[AttemptResult] = []
        async with open_dask_executor(config, grace=0.3) as ex:
            client = await ex.connection.usable()
            assert client is not None
            step = shell("doomed", f"sleep 300 & echo $$ $! > {pids}; wait")

            async def run() -> None:
                results.append(await ex.run(step, context("doomed")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                found = await pids_from(pids)
                (address, worker_pid), *_ = client.run(os.getpid).items()
                os.kill(worker_pid, signal.SIGKILL)
            assert results == [AttemptResult(False, f"worker lost: {address}", worker=address)]
            # The step's group outlived its worker; the restarted worker's plugin kills it.
            assert alive(found)
            await await_for(lambda: alive(found) == [], 20)


async def test_scheduler_down_at_start_then_back_then_lost_mid_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    config = DaskExecutorConfig(address, connect_timeout=0.5)
    ok = shell("ok", "echo fine")
    caplog.set_level(logging.WARNING, "dagd.runtime.dask")
    async with open_dask_executor(
        config, grace=0.3, reconnect_interval=0.1, check_interval=0.05
    ) as ex:
        result = await ex.run(ok, context("ok"))
        assert result == AttemptResult(False, f"dask scheduler unreachable: {address}")
        assert (await ex.run(ok, context("ok"))).error == result.error
        unreachable = [r.message for r in caplog.records if "unreachable" in r.message]
        assert len(unreachable) == 1, unreachable  # one line, not one per retry
        assert unreachable[0].startswith(f"dask scheduler unreachable: {address} (")

        with dask_cli(tmp_path, port) as cluster:
            await await_for(lambda: ex.connection.client is not None, 20)
            assert (await ex.run(ok, context("ok"))).ok

            # Lost while a step runs: the attempt fails at once, with the reason.
            pids = tmp_path / "pids"
            results: list[AttemptResult] = []
            step = shell("cut", f"sleep 300 & echo $$ $! > {pids}; wait")

            async def run() -> None:
                results.append(await ex.run(step, context("cut")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                found = await pids_from(pids)
                cluster.scheduler.kill()
            assert results == [AttemptResult(False, f"dask scheduler connection lost: {address}")]
            # Its worker, cut off from the scheduler, closes and kills its steps.
            await await_for(lambda: alive(found) == [], 10)
            # And the scheduler back: dagd is connected again.
            cluster.start_scheduler()
            await await_for(lambda: ex.connection.client is not None, 20)


class DaskCli:
    """A scheduler and workers started as `dask scheduler` / `dask worker` processes."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler = self.start_scheduler()
        self.start_worker()

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        with open(self.root / "dask.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        self.scheduler = self._start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-dashboard",
            "--dashboard-address",
            "127.0.0.1:0",
        )
        return self.scheduler

    def start_worker(self) -> None:
        self._start(
            "worker",
            f"tcp://127.0.0.1:{self.port}",
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--no-nanny",
        )

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def dask_cli(root: Path, port: int) -> Iterator[DaskCli]:
    cluster = DaskCli(root, port)
    try:
        yield cluster
    finally:
        cluster.close()


async def test_a_worker_that_cannot_be_reached_does_not_delay_stops_on_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two workers; the one not running the step is frozen (SIGSTOP): it stays registered at
    # the scheduler but answers nothing, as a worker whose dagd plugin hangs does.
    caplog.set_level(logging.WARNING, "dagd.runtime.dask")
    with local_cluster(2) as cluster:
        config = DaskExecutorConfig(cluster.scheduler_address, connect_timeout=5.0)
        pids = tmp_path / "pids"
        grace = 0.3
        async with open_dask_executor(config, grace=grace) as ex:
            client = await ex.connection.usable()
            assert client is not None
            workers = client.run(os.getpid)
            step = shell("long", f"sleep 300 & echo $$ $! > {pids}; wait")
            scope = trio.CancelScope()

            async def run() -> None:
                with scope:
                    await ex.run(step, context("long"))

            frozen = None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run)
                    found = await pids_from(pids)
                    runner = psutil.Process(found[0]).ppid()
                    (frozen,) = [pid for pid in workers.values() if pid != runner]
                    os.kill(frozen, signal.SIGSTOP)
                    start = trio.current_time()
                    scope.cancel()
                # run() returns once the step's group is gone on its worker, not held up
                # by the frozen one.
                assert trio.current_time() - start < grace + 2.0
                assert alive(found) == []
                # Asking the frozen worker itself gives up in time, with an ERROR naming it.
                (address,) = [a for a, pid in workers.items() if pid == frozen]
                assert await _run_on(client, address, 0.5, "stop steps", os.getpid) is None
                errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
                assert errors == [f"cannot stop steps on dask worker {address}: no answer in 0.5s"]
            finally:
                if frozen is not None:
                    os.kill(frozen, signal.SIGCONT)
