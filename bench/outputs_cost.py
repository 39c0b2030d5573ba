"""What outputs, preconditions and wait_for cost: the engine's per-step overhead on DAGs that
use none of them, paired against a checkout of dagd from before they existed; and the cost of
outputs per step.

    git worktree add --detach /tmp/dagd-base <commit before outputs>
    python bench/outputs_cost.py --base /tmp/dagd-base          # ~3 min
    python bench/outputs_cost.py --base /tmp/dagd-base --rounds 7 --part engine

Part "engine": bench/engine_overhead.py's four runs (10,000 no-op Python steps; chain and
fan-out; async and sync callables), each in a fresh child process of each tree, the two trees
alternating round by round (the same machine load for both); reported: each tree's median
CPU µs/step (the child's process time, all threads, the lesser of two runs: on a shared,
loaded machine wall time mostly measures the wait for a core) and the median of the
per-round ratios new/base (the requirement: at most 1.10).

Part "outputs" (this tree only): a fan-out of Python steps that each return 3 outputs against
the same fan-out returning None (10,000 steps), and a fan-out of shell steps that each append
3 lines to $DAGD_OUTPUT against the same steps writing nothing (300 steps, 8 at a time), each
pair alternating in one process; reported: dagd's CPU µs per step (the daemon side: the
shell steps' own processes are not counted) and the difference per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = [
    ("chain", "async_noop"),
    ("chain", "sync_noop"),
    ("fan", "async_noop"),
    ("fan", "sync_noop"),
]


def engine_child() -> None:
    """In a child: µs/step of each engine_overhead config (after a warm-up), as JSON."""
    from engine_overhead import N, build_dag, run_once

    for shape, func in CONFIGS:
        run_once(build_dag(shape, func, 50), "warm")
    out = {}
    for shape, func in CONFIGS:
        dag = build_dag(shape, func)
        cpus = []
        for i in range(2):  # the least disturbed of two
            cpu = time.process_time()
            run_once(dag, f"r{i}")
            cpus.append(time.process_time() - cpu)
        out[f"{shape}/{func}"] = min(cpus) / N * 1e6
    print(json.dumps(out))


def run_child(tree: Path, part: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(HERE / "outputs_cost.py"), "--child", part],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def engine_part(base: Path, rounds: int) -> None:
    print(f"engine overhead, paired: base {base} vs this tree {ROOT}, {rounds} rounds")
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    runs: dict[str, dict[str, list[float]]] = {"base": {}, "new": {}}
    for r in range(rounds):
        order = [("base", base), ("new", ROOT)] if r % 2 == 0 else [("new", ROOT), ("base", base)]
        for name, tree in order:
            for key, us in run_child(tree, "engine").items():
                runs[name].setdefault(key, []).append(us)
    header = (
        f"{'config (CPU)':<18} {'base µs/step':>12} {'new µs/step':>12} {'new/base':>9}"
        "  per-round ratios"
    )
    print(header)
    print("-" * len(header))
    for key in runs["base"]:
        b, n = runs["base"][key], runs["new"][key]
        ratios = [x / y for x, y in zip(n, b, strict=True)]
        print(
            f"{key:<18} {statistics.median(b):>12.1f} {statistics.median(n):>12.1f} "
            f"{statistics.median(ratios):>9.3f}  [{' '.join(f'{x:.2f}' for x in ratios)}]"
        )
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def outputs_child() -> None:
    """In a child: µs/step of fan-outs with and without outputs, alternating, as JSON."""
    import tempfile

    import trio

    from dagd.core.model import DagSpec, StepSpec
    from dagd.core.runstate import RunState
    from dagd.runtime.engine import run_dag
    from dagd.runtime.local.executor import LocalExecutor

    def fan(n: int, make: dict[str, str], limit: int | None = None) -> DagSpec:
        steps = {"root": StepSpec("root", **make)}  # type: ignore[arg-type]
        mids = tuple(f"m{i}" for i in range(n))
        for sid in mids:
            steps[sid] = StepSpec(sid, depends_on=("root",), **make)  # type: ignore[arg-type]
        steps["sink"] = StepSpec("sink", depends_on=mids, **make)  # type: ignore[arg-type]
        return DagSpec("fan", steps, ("root", *mids, "sink"), max_active_steps=limit)

    def timed(dag: DagSpec, executor: LocalExecutor) -> float:
        async def main() -> None:
            status = await run_dag(RunState(dag, "r"), executor, lambda e: None)
            assert status.value == "success", status

        cpu = time.process_time()  # this process's CPU (all its threads): not the steps'
        trio.run(main)
        return (time.process_time() - cpu) / len(dag.steps) * 1e6

    py_n, sh_n = 10_000, 300
    cases = {
        "python/none": (fan(py_n, {"call": "benchsteps:async_noop"}), None),
        "python/3 outputs": (fan(py_n, {"call": "benchsteps:async_three_outputs"}), None),
        "shell/none": (fan(sh_n, {"command": "true"}, 8), tempfile.mkdtemp()),
        "shell/3 outputs": (
            fan(
                sh_n,
                {"command": 'printf "a=1\\nb=two\\nc=3.0\\n" >> "$DAGD_OUTPUT"'},
                8,
            ),
            tempfile.mkdtemp(),
        ),
    }
    for dag, logs in cases.values():  # warm-up
        small = DagSpec(dag.id, {"root": dag.steps["root"]}, ("root",))
        timed(small, LocalExecutor(log_dir=Path(logs) if logs else None))
    walls: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(3):
        for name, (dag, logs) in cases.items():
            walls[name].append(timed(dag, LocalExecutor(log_dir=Path(logs) if logs else None)))
    print(json.dumps({name: statistics.median(w) for name, w in walls.items()}))


def outputs_part() -> None:
    print(f"outputs per step (this tree, {ROOT}), CPU, median of 3 alternating runs:")
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    got = run_child(ROOT, "outputs")
    for kind in ("python", "shell"):
        none, three = got[f"{kind}/none"], got[f"{kind}/3 outputs"]
        print(
            f"  {kind:<7} no outputs {none:7.1f} µs/step, 3 outputs {three:7.1f} µs/step: "
            f"+{three - none:.1f} µs/step ({three / none:.2f}x)"
        )
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, help="a checkout of dagd before outputs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", choices=["engine", "outputs", "all"], default="all")
    parser.add_argument("--child", choices=["engine", "outputs"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "engine":
        engine_child()
        return
    if args.child == "outputs":
        outputs_child()
        return
    if args.part in ("engine", "all"):
        if args.base is None:
            parser.error("--base is needed for the engine part")
        engine_part(args.base, args.rounds)
        print()
    if args.part in ("outputs", "all"):
        outputs_part()


if __name__ == "__main__":
    main()
