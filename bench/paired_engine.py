"""A change's cost per step on the engine's hot path, measured against a baseline checkout in
the same run: bench/engine_overhead.py's runs, alternated between the two trees.

    git worktree add /tmp/base <base commit>
    python bench/paired_engine.py --base /tmp/base            # ~2 min on 2 idle cores

Each round starts one child process per tree and shape (PYTHONPATH set to the tree; the two
trees in alternating order), which times `--runs` runs of the shape (a chain or a fan-out of
`--steps` no-op async callable steps, as engine_overhead.py builds them) and reports its best
wall time and its best CPU time (`time.process_time`: async no-op steps run on the loop's
thread only, so this is the engine's own work, which other processes on the machine disturb far
less than wall time). On a shared machine single timings vary several-fold with the load, so
what is compared is the best per tree over all rounds (the least disturbed run of each) and the
median of the per-round ratios (each round's two children ran back to back). The DAGs use no
lifecycle handlers, outputs or other optional features: what is measured is what a DAG that
does not use them pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import gc, json, sys, time
sys.path.insert(0, {bench!r})
import trio
from engine_overhead import build_dag, run_once
from dagd.core.runstate import RunState
from dagd.runtime.engine import run_dag
from dagd.runtime.local.executor import LocalExecutor

def cpu_once(dag, run_id):
    async def main():
        await run_dag(RunState(dag, run_id), LocalExecutor(log_dir=None), lambda e: None)
    gc.collect()
    t0 = time.process_time()
    trio.run(main)
    return time.process_time() - t0

shape = {shape!r}
run_once(build_dag(shape, "async_noop", 50), "warm")
dag = build_dag(shape, "async_noop", {steps})
wall = min(run_once(dag, f"w{{i}}")[0] for i in range({runs}))
cpu = min(cpu_once(dag, f"c{{i}}") for i in range({runs}))
print(json.dumps([wall / {steps} * 1e6, cpu / {steps} * 1e6]))
"""


def child(tree: Path, shape: str, steps: int, runs: int) -> list[float]:
    """Best [wall, CPU] µs per step of `shape`, measured in a fresh process on `tree`."""
    code = CHILD.format(bench=str(tree / "bench"), shape=shape, steps=steps, runs=runs)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3, help="runs per child; its best counts")
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    print(f"base {trees['base']}\nnew  {trees['new']}")
    print(f"{args.rounds} rounds x {args.runs} runs of {args.steps} no-op async steps per shape")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # tree -> (shape, measure) -> one best per round
    best: dict[str, dict[tuple[str, str], list[float]]] = {name: {} for name in trees}
    for i in range(args.rounds):
        order = ["base", "new"] if i % 2 == 0 else ["new", "base"]
        for shape in ("chain", "fan"):
            for name in order:
                wall, cpu = child(trees[name], shape, args.steps, args.runs)
                best[name].setdefault((shape, "wall"), []).append(wall)
                best[name].setdefault((shape, "cpu"), []).append(cpu)
        row = "  ".join(
            f"{shape} {measure} {best['base'][shape, measure][-1]:6.1f}"
            f" -> {best['new'][shape, measure][-1]:6.1f}"
            for shape in ("chain", "fan")
            for measure in ("wall", "cpu")
        )
        print(f"round {i + 1}: {row} (µs/step, base -> new)")
    print("\nshape  measure  base best  new best  new/base (best)  new/base (median of rounds)")
    for shape in ("chain", "fan"):
        for measure in ("wall", "cpu"):
            b, n = best["base"][shape, measure], best["new"][shape, measure]
            paired = statistics.median(y / x for x, y in zip(b, n, strict=True))
            print(
                f"{shape:<5}  {measure:<7}  {min(b):7.1f}µs  {min(n):6.1f}µs"
                f"  {min(n) / min(b):15.3f}  {paired:27.3f}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
