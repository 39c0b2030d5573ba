"""Engine overhead per step: 10,000 no-op Python-callable steps through dagd.runtime.engine.run_dag.

    python bench/engine_overhead.py             # timings (median of 3) + memory, ~30-45 s
    python bench/engine_overhead.py --reps 5    # more repetitions on a noisy machine

Two shapes: a chain (each step depends on the previous one) and a fan-out/fan-in (1 root ->
9,998 parallel steps -> 1 sink), each with async callables (run in the event loop) and sync
callables (each handed to a worker thread). Every run publishes its events into a list. The
memory figures come from a fresh child process per shape, so they are not polluted by the timing
runs: tracemalloc's peak during the run, and the growth of peak RSS (VmHWM) over the RSS before it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import trio

from dagd.core.model import DagSpec, StepSpec
from dagd.core.runstate import RunState
from dagd.runtime.engine import run_dag
from dagd.runtime.local.executor import LocalExecutor

N = 10_000
US_LIMIT = 100.0  # requirement: <= 100 µs of wall time per step
MB_LIMIT = 100.0  # requirement: < 100 MB for a 10,000-step run


def build_dag(shape: str, func: str, n: int = N) -> DagSpec:
    call = f"benchsteps:{func}"
    steps: dict[str, StepSpec] = {}
    if shape == "chain":
        prev: tuple[str, ...] = ()
        for i in range(n):
            sid = f"s{i}"
            steps[sid] = StepSpec(sid, call=call, depends_on=prev)
            prev = (sid,)
        order = tuple(steps)
    elif shape == "fan":
        steps["root"] = StepSpec("root", call=call)
        mids = tuple(f"m{i}" for i in range(n - 2))
        for sid in mids:
            steps[sid] = StepSpec(sid, call=call, depends_on=("root",))
        steps["sink"] = StepSpec("sink", call=call, depends_on=mids)
        order = ("root", *mids, "sink")
    else:
        raise ValueError(shape)
    return DagSpec(id=f"bench-{shape}", steps=steps, order=order)


def run_once(dag: DagSpec, run_id: str) -> tuple[float, int]:
    """Wall seconds of one whole run (RunState creation included) and the number of events."""
    events: list[object] = []

    async def main() -> None:
        state = RunState(dag, run_id)
        status = await run_dag(state, LocalExecutor(log_dir=None), events.append)
        assert status.value == "success", status

    gc.collect()
    t0 = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - t0
    return wall, len(events)


def bare_trio(kind: str, n: int = N) -> float:
    """The floor under dagd: seconds for n bare no-op calls the way dagd makes them, without dagd.

    par-task:     n tasks each awaiting the async no-op (the fan-out's task spawns);
    seq-thread:   n sequential trio.to_thread.run_sync calls in one task;
    chain-thread: the same, but each call in a new task that the previous one spawned (the
                  chain's pattern: one task per attempt);
    par-thread:   n tasks each making one such call (the fan-out's pattern)."""
    from benchsteps import async_noop, sync_noop

    async def par_task() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(async_noop, None)

    async def seq_thread() -> None:
        for _ in range(n):
            await trio.to_thread.run_sync(sync_noop, None, abandon_on_cancel=True)

    async def chain_thread() -> None:
        async def one(i: int, nursery: trio.Nursery) -> None:
            await trio.to_thread.run_sync(sync_noop, None, abandon_on_cancel=True)
            if i + 1 < n:
                nursery.start_soon(one, i + 1, nursery)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0, nursery)

    async def par_thread() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(trio.to_thread.run_sync, sync_noop, None)

    fn = {
        "par-task": par_task,
        "seq-thread": seq_thread,
        "chain-thread": chain_thread,
        "par-thread": par_thread,
    }[kind]
    gc.collect()
    t0 = time.perf_counter()
    trio.run(fn)
    return time.perf_counter() - t0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(shape: str) -> None:
    """In a fresh process: RSS growth and tracemalloc peak of one 10,000-step async run."""
    dag = build_dag(shape, "async_noop")
    run_once(build_dag(shape, "async_noop", 50), "warm")  # imports, thread/IO setup
    gc.collect()
    rss_before = _status_kb("VmRSS")
    _, events = run_once(dag, "rss")
    hwm = _status_kb("VmHWM")
    gc.collect()
    tracemalloc.start()
    run_once(dag, "traced")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "rss_before_mb": rss_before / 1024,
                "rss_growth_mb": (hwm - rss_before) / 1024,
                "tracemalloc_peak_mb": peak / 2**20,
                "events": events,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--memory-child", choices=["chain", "fan"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    reps = args.reps
    print(f"dagd engine overhead: {N:,} no-op callable steps, LocalExecutor(log_dir=None)")
    print(
        f"python {sys.version.split()[0]}, trio {trio.__version__}, nproc {os.cpu_count()}, "
        f"{reps} interleaved repetitions, median reported"
    )
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    configs = [("chain", "async"), ("chain", "sync"), ("fan", "async"), ("fan", "sync")]
    funcs = {"async": "async_noop", "sync": "sync_noop"}
    dags = {(shape, kind): build_dag(shape, funcs[kind]) for shape, kind in configs}
    floor_kinds = ("par-task", "seq-thread", "chain-thread", "par-thread")
    for shape, kind in configs:  # warm-up: imports, the thread cache
        run_once(build_dag(shape, funcs[kind], 50), "warm")
    walls: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    floor_walls: dict[str, list[float]] = {k: [] for k in floor_kinds}
    events: dict[tuple[str, str], int] = {}
    for r in range(reps):
        for config in configs:
            wall, events[config] = run_once(dags[config], f"r{r}")
            walls[config].append(wall)
        for kind in floor_kinds:
            floor_walls[kind].append(bare_trio(kind))

    results: dict[tuple[str, str], float] = {}
    header = f"{'shape':<6} {'callable':<8} {'median wall':>11} {'µs/step':>8} {'events':>7}  runs"
    print(header)
    print("-" * len(header))
    for config in configs:
        wall = statistics.median(walls[config])
        results[config] = us = wall / N * 1e6
        runs = " ".join(f"{w * 1e6 / N:.1f}" for w in walls[config])
        shape, kind = config
        print(f"{shape:<6} {kind:<8} {wall:>10.3f}s {us:>8.1f} {events[config]:>7}  [{runs}]")
    print()
    print("the floor: the same calls in bare trio, no dagd (µs per call):")
    floors = {}
    for kind in floor_kinds:
        floors[kind] = statistics.median(floor_walls[kind]) / N * 1e6
        runs = " ".join(f"{w * 1e6 / N:.1f}" for w in floor_walls[kind])
        print(f"  {kind:<12} {floors[kind]:6.1f}  [{runs}]")
    print()
    async_worst = max(results["chain", "async"], results["fan", "async"])
    print(
        f"async callables, worst shape: {async_worst:.1f} µs/step "
        f"(requirement <= {US_LIMIT:.0f} µs): {'OK' if async_worst <= US_LIMIT else 'NOT MET'}"
    )
    print(
        f"  fan: {results['fan', 'async'] / floors['par-task']:.1f}x a bare task spawn "
        f"({floors['par-task']:.1f} µs)"
    )
    sync_worst = max(results["chain", "sync"], results["fan", "sync"])
    print(
        f"sync callables, worst shape:  {sync_worst:.1f} µs/step "
        "(reported only: the limit is for async steps; a sync step pays trio's thread "
        "hand-off, compared with bare trio below)"
    )
    for shape, floor in (("chain", "chain-thread"), ("fan", "par-thread")):
        sync, asyn = results[shape, "sync"], results[shape, "async"]
        print(
            f"  {shape}: sync/async = {sync / asyn:.2f}x; dagd/bare hand-off ({floor}) = "
            f"{sync / floors[floor]:.2f}x, dagd adds {sync - floors[floor]:.1f} µs to it"
        )
    print()
    print("memory of one 10,000-step async run (fresh child process per shape):")
    worst_mb = 0.0
    for shape in ("chain", "fan"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", shape],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        m = json.loads(out)
        worst_mb = max(worst_mb, m["rss_growth_mb"], m["tracemalloc_peak_mb"])
        print(
            f"  {shape:<6} tracemalloc peak {m['tracemalloc_peak_mb']:6.1f} MB, "
            f"RSS growth {m['rss_growth_mb']:6.1f} MB (RSS before {m['rss_before_mb']:.1f} MB), "
            f"{m['events']} events kept"
        )
    print(
        f"worst: {worst_mb:.1f} MB (requirement < {MB_LIMIT:.0f} MB): "
        f"{'OK' if worst_mb < MB_LIMIT else 'NOT MET'}"
    )
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
