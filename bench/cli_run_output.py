"""What `dagd run`'s output costs per step, against the engine alone, in every output mode.

    python bench/cli_run_output.py              # ~20 s: 5 interleaved repetitions, medians
    python bench/cli_run_output.py --reps 9 --steps 5000

A chain of no-op Python-callable steps (`benchsteps:async_noop`) is run four ways:

- engine:   RunDriver with the LocalExecutor the CLI uses and a publish that drops the events
            (the engine alone; bench/engine_overhead.py measures it in depth), in each mode's
            process, interleaved with that mode's runs;
- terminal: `dagd run chain` under a pseudo-terminal (the live view), its screen drained;
- plain:    `dagd run chain` with stdout to a file (a CI log: one line per transition);
- quiet:    `dagd run chain --quiet` with stdout to a file (failures and the summary only).

Each mode runs in its own process (stdout on a pseudo-terminal, or on a log file) that calls
the `dagd run` command in-process, so interpreter start-up stays out of the figures. The
command also reads the DAG folder each time: each mode therefore also runs a one-step DAG
from the same folder (same files, same loading), and the per-step cost is
(wall(chain) - wall(one step)) / (steps - 1): what the run itself costs. The
overhead of a mode is that minus the engine's per-step cost. Requirement (issue 12): at most
50 µs per step over the engine in every mode, for a 2,000-step chain.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

from dagd.core.model import DagSpec
from dagd.core.runstate import RunState
from dagd.daemon.dagfolder import load_dag_folder
from dagd.runtime.engine import RunDriver
from dagd.runtime.local.executor import LocalExecutor

BENCH = Path(__file__).resolve().parent
US_LIMIT = 50.0  # requirement: <= 50 µs per step over the engine, in every mode
MODES = ("terminal", "plain", "quiet")


def chain_toml(n: int) -> str:
    """A DAG file: steps s0 -> s1 -> ... -> s{n-1}, each the async no-op callable."""
    parts = []
    for i in range(n):
        dep = f'\ndepends_on = ["s{i - 1}"]' if i else ""
        parts.append(f'[steps.s{i}]\ncall = "benchsteps:async_noop"{dep}\n')
    return "\n".join(parts)


def engine_once(dag: DagSpec, log_dir: Path) -> float:
    """Wall seconds of one run through the engine alone, set up as `dagd run` sets it up."""

    async def main() -> None:
        state = RunState(dag, "bench")
        executor = LocalExecutor(log_dir=log_dir)
        driver = RunDriver(state, executor, lambda event: None, step_slots=trio.CapacityLimiter(16))
        await driver.run()
        assert state.status.value == "success", state.status

    gc.collect()
    t0 = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - t0


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:  # EIO: the child closed the terminal
            return


def child(root: Path, mode: str, reps: int, results: Path) -> None:
    """In a process whose stdout is the terminal or the log file of `mode`, `reps` times: the
    chain through the engine alone, then `dagd run` of the chain and of the one-step DAG
    through the click command itself (no interpreter start-up in the figures); the wall
    seconds written to `results` as JSON: {"engine": [...], "chain": [...], "one": [...]}."""
    from dagd.cli.main import main as dagd

    def once(dag_id: str) -> float:
        args = ["run", dag_id, "--config", str(root / "config.toml")]
        if mode == "quiet":
            args.append("--quiet")
        gc.collect()
        t0 = time.perf_counter()
        try:
            dagd.main(args, standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
        return time.perf_counter() - t0

    dag = load_dag_folder(root / "dags").dags["chain"]
    once("one")  # warm-up: imports, the thread cache
    engine_once(dag, root / "logs")
    walls: dict[str, list[float]] = {"engine": [], "chain": [], "one": []}
    for _ in range(reps):
        walls["engine"].append(engine_once(dag, root / "logs"))
        for dag_id in ("chain", "one"):
            walls[dag_id].append(once(dag_id))
    results.write_text(json.dumps(walls))


def cli_walls(root: Path, mode: str, reps: int) -> dict[str, list[float]]:
    """Wall seconds of the runs of a `child` process in `mode`."""
    results = root / f"walls-{mode}.json"
    args = [sys.executable, __file__, "--child", mode, "--root", str(root), "--reps", str(reps)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), *sys.path[1:]])}
    env.pop("DAGD_CONFIG", None)
    if mode == "terminal":
        env.update(COLUMNS="120", LINES="40", TERM="xterm-256color")
        master, slave = pty.openpty()
        reader = threading.Thread(target=_drain, args=(master,), daemon=True)
        reader.start()
        proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=root)
        os.close(slave)
        code = proc.wait()
        reader.join(5)
        os.close(master)
    else:
        with open(root / f"out-{mode}.log", "wb") as out:
            code = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise SystemExit(f"the {mode} child exited {code}")
    walls: dict[str, list[float]] = json.loads(results.read_text())
    return walls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000, help="steps in the chain")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (median reported)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, reps = args.steps, args.reps
    if args.child:
        child(args.root, args.child, reps, args.root / f"walls-{args.child}.json")
        return

    with tempfile.TemporaryDirectory(prefix="dagd-bench-") as tmp:
        root = Path(tmp)
        (root / "dags").mkdir()
        (root / "dags" / "chain.toml").write_text(chain_toml(n))
        (root / "dags" / "one.toml").write_text(chain_toml(1))
        (root / "config.toml").write_text('state_dir = "state"\ndags_dir = "dags"\n')

        print(f"dagd run output cost: a {n:,}-step chain of no-op callables")
        print(
            f"python {sys.version.split()[0]}, trio {trio.__version__}, nproc {os.cpu_count()}, "
            f"{reps} interleaved repetitions, median reported"
        )
        print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        print()
        walls = {mode: cli_walls(root, mode, reps) for mode in MODES}

        header = (
            f"{'mode':<9} {'engine':>8} {'dagd run':>9} {'1 step':>7} "
            f"{'engine µs/step':>14} {'run µs/step':>11} {'over engine':>11}"
        )
        print(header)
        print("-" * len(header))
        worst = 0.0
        for mode in MODES:
            engine, chain, one = (
                statistics.median(walls[mode][k]) for k in ("engine", "chain", "one")
            )
            engine_us = engine / n * 1e6
            run_us = (chain - one) / (n - 1) * 1e6
            over = run_us - engine_us
            worst = max(worst, over)
            print(
                f"{mode:<9} {engine:>7.3f}s {chain:>8.3f}s {one:>6.3f}s "
                f"{engine_us:>14.1f} {run_us:>11.1f} {over:>11.1f}"
            )
        print()
        verdict = "ok" if worst <= US_LIMIT else "FAIL"
        print(f"worst overhead {worst:.1f} µs/step over the engine (limit {US_LIMIT:g}): {verdict}")


if __name__ == "__main__":
    main()
