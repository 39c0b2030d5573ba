"""Steps on a Dask LocalCluster through dagd's Dask executor, against plain Dask.

    python bench/dask_steps.py            # 3 rounds, the 64 x 1 s scaling DAG; ~3-4 min
    python bench/dask_steps.py --quick    # 1 round, a 16 x 0.5 s scaling DAG; ~40 s
    python bench/dask_steps.py --part rates --rounds 5

1. Rate, 500 steps in flight, on a LocalCluster of two worker processes (two threads each):
   - shell: a DAG of 500 independent steps running `true` (argv form, no shell) through
     dagd.runtime.engine.run_dag with the Dask executor (max_active_steps 500), against plain
     Dask: `client.map` + `gather` of a function that runs `true` with subprocess.run.
   - Python: 500 steps `call = "builtins:id"` (a no-op that takes the step's context) against
     `client.map(id, ...)` + `gather`.
   Both in the same run, interleaved; the ratio dagd / plain Dask (steps per second) is what
   docs/benchmarks.md reports (the requirement: >= 0.7).
2. Scaling: a DAG of 64 steps sleeping 1 s (--quick: 16 steps of 0.5 s) on 1, 2 and 4 worker
   processes with one thread each: the wall time against steps x seconds / workers.
3. Loop lag: while 500 remote steps (`sleep 0.2`) are in flight, a trio task asks to wake every
   5 ms and records how late it wakes: p50, p99 and max in ms (the requirement: p99 < 20 ms).

The workers are spawned processes: this script has the `__main__` guard they need.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import trio
from distributed import Client, LocalCluster

from dagd.core.config import DaskExecutorConfig
from dagd.core.model import DagSpec, RunStatus, StepSpec
from dagd.core.runstate import RunState
from dagd.runtime.dask.executor import open_dask_executor
from dagd.runtime.engine import run_dag

N = 500
RATIO_LIMIT = 0.7
LAG_LIMIT_MS = 20.0


def run_true(_: int) -> int:
    """Plain Dask's shell step: run `true` (as dagd's step does, without a shell)."""
    return subprocess.run(["true"], check=False).returncode


def cluster(workers: int, threads: int) -> LocalCluster:
    """A LocalCluster set up as docs/dask.md asks (no re-run of a dead worker's tasks)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        )


def dag_of(steps: list[StepSpec], dag_id: str) -> DagSpec:
    by_id = {s.id: s for s in steps}
    return DagSpec(id=dag_id, steps=by_id, order=tuple(by_id), max_active_steps=len(by_id))


async def dagd_dag(address: str, dag: DagSpec, run_id: str, log_dir: Path) -> float:
    """Seconds to run `dag` through the engine with every step on the cluster."""
    config = DaskExecutorConfig(address)
    async with open_dask_executor(config, log_dir=log_dir) as executor:
        await executor.connection.usable()
        t0 = time.perf_counter()
        status = await run_dag(
            RunState(dag, run_id),
            executor,
            step_slots=trio.CapacityLimiter(len(dag.steps)),
        )
        elapsed = time.perf_counter() - t0
    assert status is RunStatus.SUCCESS, status
    return elapsed


def plain(client: Client, fn: Any) -> float:
    t0 = time.perf_counter()
    client.gather(client.map(fn, range(N), pure=False))
    return time.perf_counter() - t0


def rates(rounds: int, log_dir: Path) -> None:
    shell = dag_of([StepSpec(f"t{i}", command=("true",), executor="dask") for i in range(N)], "sh")
    python = dag_of(
        [StepSpec(f"p{i}", call="builtins:id", executor="dask") for i in range(N)], "py"
    )
    times: dict[str, list[float]] = {
        k: [] for k in ("dagd shell", "dask shell", "dagd py", "dask py")
    }
    with cluster(2, 2) as c, Client(c) as client:
        client.gather(client.map(run_true, range(20), pure=False))  # warm the workers
        for r in range(rounds):
            times["dask shell"].append(plain(client, run_true))
            times["dagd shell"].append(
                trio.run(dagd_dag, c.scheduler_address, shell, f"s{r}", log_dir)
            )
            times["dask py"].append(plain(client, id))
            times["dagd py"].append(
                trio.run(dagd_dag, c.scheduler_address, python, f"p{r}", log_dir)
            )
    print(f"1. {N} steps in flight, 2 worker processes x 2 threads, {rounds} round(s), medians")
    med = {k: statistics.median(v) for k, v in times.items()}
    for kind in ("shell", "py"):
        ours, theirs = N / med[f"dagd {kind}"], N / med[f"dask {kind}"]
        ok = "ok" if ours / theirs >= RATIO_LIMIT else f"BELOW {RATIO_LIMIT}"
        print(
            f"   {kind:5}  dagd {ours:7.0f} steps/s   plain Dask {theirs:7.0f} tasks/s   "
            f"ratio {ours / theirs:.2f} ({ok})"
        )


def scaling(steps: int, seconds: float, log_dir: Path) -> None:
    print(f"2. a DAG of {steps} steps sleeping {seconds:g} s, worker processes x 1 thread")
    sleep = dag_of(
        [StepSpec(f"s{i}", command=("sleep", str(seconds)), executor="dask") for i in range(steps)],
        "sleep",
    )
    for workers in (1, 2, 4):
        with cluster(workers, 1) as c:
            Client(c).close()  # wait for the workers to be up
            elapsed = trio.run(dagd_dag, c.scheduler_address, sleep, f"w{workers}", log_dir)
        ideal = steps * seconds / workers
        ratio = elapsed / ideal
        print(f"   {workers} worker(s): {elapsed:6.2f} s   ideal {ideal:6.2f} s   ({ratio:.2f}x)")


async def lagged_run(address: str, dag: DagSpec, log_dir: Path) -> list[float]:
    lags: list[float] = []
    done = trio.Event()

    async def probe() -> None:
        while not done.is_set():
            t0 = trio.current_time()
            await trio.sleep(0.005)
            lags.append((trio.current_time() - t0 - 0.005) * 1000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await dagd_dag(address, dag, "lag", log_dir)
        done.set()
    return lags


def loop_lag(log_dir: Path) -> None:
    dag = dag_of(
        [StepSpec(f"l{i}", command=("sleep", "0.2"), executor="dask") for i in range(N)], "lag"
    )
    with cluster(2, 2) as c:
        lags = sorted(trio.run(lagged_run, c.scheduler_address, dag, log_dir))
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    ok = "ok" if p99 < LAG_LIMIT_MS else f"ABOVE {LAG_LIMIT_MS:g}"
    print(f"3. loop lag with {N} remote steps in flight ({len(lags)} samples)")
    print(f"   p50 {p50:.2f} ms   p99 {p99:.2f} ms ({ok})   max {lags[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, a small scaling DAG")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of part 1")
    parser.add_argument(
        "--part", choices=("rates", "scaling", "lag"), action="append", help="only these parts"
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    parts = args.part or ("rates", "scaling", "lag")
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        if "rates" in parts:
            rates(rounds, log_dir)
        if "scaling" in parts:
            scaling(*((16, 0.5) if args.quick else (64, 1.0)), log_dir)
        if "lag" in parts:
            loop_lag(log_dir)


if __name__ == "__main__":
    main()
