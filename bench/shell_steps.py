"""Process spawning through dagd vs bare trio vs plain subprocess, at parallelism 2.

    python bench/shell_steps.py              # 5 interleaved rounds, medians; ~30-60 s
    python bench/shell_steps.py --rounds 3

dagd: one run of a DAG with 500 independent steps running `true`, max_active_steps = 2, through
dagd.runtime.engine.run_dag with a publish callback that keeps every event. Each step gets its own
process group, an environment with the DAGD_* variables, its output piped into log files that
are created on the first byte (so `true` creates none), and the executor kills the group when
the step ends and looks among dagd's re-parented children for processes that escaped it (dagd
is their subreaper: procs.contain): that is the cost measured. Rows: argv form `["true"]` (no
shell, the same program the baselines run) with a log_dir in the temp dir (--log-parent; the
requirement's row), with a log_dir on tmpfs (/dev/shm), and with log_dir=None (output to
/dev/null, no pipes); the shell form `"true"` (`/bin/sh -c true`); and `printf x`, whose
output makes every step create its .out file, which shows what a log file costs on this disk.
The cost of creating a file in each log_dir is probed and printed first: it belongs to the
file system, not to dagd.

bare trio: two tasks, each awaiting `trio.run_process(["true"])` 250 times.
subprocess: two threads, each calling `subprocess.run(["true"])` 250 times.

A diagnostic row: bare trio making each spawn with dagd's options (a full environment, setpgid,
/dev/null stdin, killpg afterwards), which separates the cost of those OS-level choices from
the cost of dagd's Python code.

All rows run in each round, interleaved, so a slow moment of the machine hits all of them, and
each round starts one row later than the one before, so no row always runs first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from dagd.core.model import DagSpec, StepSpec
from dagd.core.runstate import RunState
from dagd.runtime.engine import run_dag
from dagd.runtime.local.executor import LocalExecutor

N = 500
PARALLEL = 2
RATIO_LIMIT = 0.85  # requirement: dagd (with logs) / bare trio >= 0.85


def file_create_us(folder: Path, n: int = 200) -> float:
    """Microseconds to create (and close) one empty file in `folder`: the file system's part of
    a step's log cost, which varies a lot between machines and moments."""
    probe = folder / "probe"
    probe.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    us = (time.perf_counter() - t0) / n * 1e6
    for i in range(n):
        os.unlink(probe / f"f{i}")
    probe.rmdir()
    return us


def build_dag(command: str | tuple[str, ...], n: int = N) -> DagSpec:
    steps = {f"t{i}": StepSpec(f"t{i}", command=command) for i in range(n)}
    return DagSpec(id="bench-shell", steps=steps, order=tuple(steps), max_active_steps=PARALLEL)


def dagd_run(dag: DagSpec, log_dir: Path | None, run_id: str) -> float:
    events: list[object] = []

    async def main() -> None:
        status = await run_dag(RunState(dag, run_id), LocalExecutor(log_dir=log_dir), events.append)
        assert status.value == "success", status

    t0 = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - t0
    assert len(events) == 4 * len(dag.steps) + 3, len(events)
    return wall


def parallel_trio(worker: Callable[[int], Awaitable[None]], n: int) -> float:
    """Seconds for PARALLEL trio tasks to run `worker(n // PARALLEL)` each."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker, n // PARALLEL)

    t0 = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - t0


def bare_trio(n: int = N) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await trio.run_process(["true"])

    return parallel_trio(worker, n)


def bare_trio_dagd_options(n: int = N) -> float:
    """bare trio, but each spawn with what dagd's executor asks of the OS: stdin/stdout/stderr
    redirected, a full environment passed, a new process group (setpgid), killpg after exit."""

    async def worker(count: int) -> None:
        for i in range(count):
            env = dict(os.environ)
            env.update(DAGD_DAG_ID="d", DAGD_RUN_ID="r", DAGD_STEP_ID=f"t{i}", DAGD_ATTEMPT="1")
            proc = await trio.lowlevel.open_process(
                ["true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                process_group=0,
            )
            await proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    return parallel_trio(worker, n)


def plain_subprocess(n: int = N) -> float:
    def worker(count: int) -> None:
        for _ in range(count):
            subprocess.run(["true"], check=True)

    threads = [threading.Thread(target=worker, args=(n // PARALLEL,)) for _ in range(PARALLEL)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--log-parent",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the temporary log_dir goes (default: the temp dir, $TMPDIR or /tmp)",
    )
    parser.add_argument(
        "--tmpfs",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="a tmpfs for the second log_dir row (default: /dev/shm)",
    )
    args = parser.parse_args()

    print(f"spawning {N} x `true` at parallelism {PARALLEL}; {args.rounds} interleaved rounds")
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}, nproc {os.cpu_count()}")
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    argv_dag, shell_dag = build_dag(("true",)), build_dag("true")
    printf_dag = build_dag(("printf", "x"))
    walls: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # this process's CPU seconds per spawn (all its threads)
    with (
        tempfile.TemporaryDirectory(prefix="dagd-bench-logs-", dir=args.log_parent) as tmp,
        tempfile.TemporaryDirectory(prefix="dagd-bench-logs-", dir=args.tmpfs) as tmp_fs,
    ):
        logs, fast_logs = Path(tmp), Path(tmp_fs)
        create_us = {str(d): file_create_us(d) for d in (logs, fast_logs)}
        rows = {
            "dagd argv, log_dir": lambda r: dagd_run(argv_dag, logs, f"argv-{r}"),
            "dagd argv, log_dir on tmpfs": lambda r: dagd_run(argv_dag, fast_logs, f"argv-{r}"),
            "dagd argv, log_dir=None": lambda r: dagd_run(argv_dag, None, f"argv-nolog-{r}"),
            "dagd sh -c, log_dir": lambda r: dagd_run(shell_dag, logs, f"sh-{r}"),
            "bare trio.run_process": lambda r: bare_trio(),
            "bare trio, dagd's spawn options": lambda r: bare_trio_dagd_options(),
            "dagd argv printf, log_dir": lambda r: dagd_run(printf_dag, logs, f"printf-{r}"),
            "subprocess.run, 2 threads": lambda r: plain_subprocess(),
        }
        # Warm-up: imports, page cache of /bin/true and /bin/sh, the log directory.
        dagd_run(build_dag(("true",), 20), logs, "warm")
        bare_trio(20)
        plain_subprocess(20)
        order = list(rows.items())
        for r in range(args.rounds):
            # Each round starts one row later: a row's place in the round matters (the first
            # one, after the subprocess row of the round before, measured ~10 % slower), and
            # a fixed order would always put the same rows there.
            for name, fn in order[r % len(order) :] + order[: r % len(order)]:
                t0 = os.times()
                walls.setdefault(name, []).append(fn(r))
                t1 = os.times()
                cpu.setdefault(name, []).append((t1.user - t0.user + t1.system - t0.system) / N)
        logged = {
            name: sum(1 for _ in (logs / "bench-shell" / run).glob("*"))
            if (logs / "bench-shell" / run).exists()
            else 0
            for name, run in (("true", "argv-0"), ("printf x", "printf-0"))
        }
    rates = {name: N / statistics.median(w) for name, w in walls.items()}
    base = rates["bare trio.run_process"]
    width = max(map(len, rates))
    print(
        f"{'':<{width}} {'spawns/s':>9} {'vs bare trio':>12} {'CPU µs/spawn':>13}"
        "  per round (spawns/s)"
    )
    for name, rate in rates.items():
        per_round = " ".join(f"{N / w:.0f}" for w in walls[name])
        cpu_us = statistics.median(cpu[name]) * 1e6
        print(f"{name:<{width}} {rate:>9.0f} {rate / base:>11.2f}x {cpu_us:>13.0f}  [{per_round}]")
    print("(CPU µs/spawn: this process's own CPU time, all threads, per spawn; the children's")
    print(" CPU is not included. It is less sensitive to other load than spawns/s.)")
    print()
    print("log_dirs (removed afterwards), and what creating one file cost there before the run:")
    for d, us in create_us.items():
        print(f"  {d}: {us:.0f} µs per file")
    print(
        "log files written by one dagd run with a log_dir: "
        + ", ".join(f"{count} for `{name}`" for name, count in logged.items())
    )
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ratio = rates["dagd argv, log_dir"] / base
    paired = statistics.median(
        b / a
        for a, b in zip(walls["dagd argv, log_dir"], walls["bare trio.run_process"], strict=True)
    )
    print(
        f"dagd (argv, with logs) / bare trio = {ratio:.2f} (requirement >= {RATIO_LIMIT}): "
        f"{'OK' if ratio >= RATIO_LIMIT else 'NOT MET'}"
    )
    print(f"  (median of the per-round ratios, each round's two rows paired: {paired:.2f})")
    for name in ("dagd argv, log_dir=None", "dagd argv, log_dir on tmpfs", "dagd sh -c, log_dir"):
        print(f"{name} / bare trio = {rates[name] / base:.2f}")
    fair = rates["bare trio, dagd's spawn options"]
    print(
        f"bare trio with dagd's spawn options / bare trio = {fair / base:.2f} "
        "(what the OS-level choices cost)"
    )
    nolog = rates["dagd argv, log_dir=None"]
    print(
        f"dagd (argv, log_dir=None) / bare trio with dagd's spawn options = {nolog / fair:.2f} "
        "(what dagd's Python code costs)"
    )
    printf = rates["dagd argv printf, log_dir"]
    print(
        f"dagd (argv `printf x`, log_dir) / bare trio = {printf / base:.2f} (each step creates "
        "its .out file; the baseline runs `true` and writes no file)"
    )
    print(f"bare trio / subprocess.run = {base / rates['subprocess.run, 2 threads']:.2f}")


if __name__ == "__main__":
    main()
