"""Process spawning through dagd vs bare trio vs plain subprocess, at parallelism 2.

    python bench/shell_steps.py              # 5 interleaved rounds, medians; ~30-60 s
    python bench/shell_steps.py --rounds 3

dagd: one run of a DAG with 500 independent steps running `true`, max_active_steps = 2, through
dagd.engine.run_dag with a publish callback that keeps every event. Each step gets its own
session/process group, an environment with the DAGD_* variables, and (with a log_dir) two log
files, and the executor signals the group when the step ends: that is the cost measured.
Rows: argv form `["true"]` (no shell, the same program the baselines run) with a log_dir in the
temp dir (--log-parent), with a log_dir on tmpfs (/dev/shm), and with log_dir=None; and the shell
form `"true"` (`/bin/sh -c true`) with a log_dir in the temp dir. The cost of creating a file in
each log_dir is probed and printed first: it is the part of the log cost that belongs to the
file system, not to dagd.

bare trio: two tasks, each awaiting `trio.run_process(["true"])` 250 times.
subprocess: two threads, each calling `subprocess.run(["true"])` 250 times.

Two diagnostic rows: bare trio making each spawn with dagd's options (a full environment,
setsid, /dev/null stdin, killpg afterwards), which separates the cost of those OS-level choices
from the cost of dagd's Python code; and a what-if run of dagd with setpgid instead of setsid
(patched in for that row only; dagd itself is unchanged).

All rows run in each round, interleaved, so a slow moment of the machine hits all of them.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from dagd.core.model import DagSpec, StepSpec
from dagd.core.runstate import RunState
from dagd.engine import run_dag
from dagd.executor import Executor

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
        status = await run_dag(RunState(dag, run_id), Executor(log_dir=log_dir), events.append)
        assert status.value == "success", status

    t0 = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - t0
    assert len(events) == 4 * len(dag.steps) + 3, len(events)
    return wall


def bare_trio(n: int = N) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await trio.run_process(["true"])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker, n // PARALLEL)

    t0 = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - t0


def bare_trio_dagd_options(n: int = N) -> float:
    """bare trio, but each spawn with what dagd's executor asks of the OS: stdin/stdout/stderr
    redirected, a full environment passed, a new session (setsid), killpg after exit."""

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
                start_new_session=True,
            )
            await proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker, n // PARALLEL)

    t0 = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - t0


@contextlib.contextmanager
def process_group_instead_of_session() -> Iterator[None]:
    """What-if, for this benchmark only: dagd's spawns with `process_group=0` (setpgid) instead of
    `start_new_session=True` (setsid). The group kill works the same; the child stays in the
    daemon's session. On kernels with sched_autogroup, setsid also creates a scheduler group."""
    original = trio.lowlevel.open_process

    async def patched(*args: Any, **kwargs: Any) -> trio.Process:
        if kwargs.pop("start_new_session", False):
            kwargs["process_group"] = 0
        return await original(*args, **kwargs)

    trio.lowlevel.open_process = patched
    try:
        yield
    finally:
        trio.lowlevel.open_process = original


def what_if_process_group(dag: DagSpec, log_dir: Path | None, run_id: str) -> float:
    with process_group_instead_of_session():
        return dagd_run(dag, log_dir, run_id)


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
            "what-if: dagd argv, log_dir=None, setpgid": lambda r: what_if_process_group(
                argv_dag, None, f"pg-{r}"
            ),
            "subprocess.run, 2 threads": lambda r: plain_subprocess(),
        }
        # Warm-up: imports, page cache of /bin/true and /bin/sh, the log directory.
        dagd_run(build_dag(("true",), 20), logs, "warm")
        bare_trio(20)
        plain_subprocess(20)
        for r in range(args.rounds):
            for name, fn in rows.items():
                t0 = os.times()
                walls.setdefault(name, []).append(fn(r))
                t1 = os.times()
                cpu.setdefault(name, []).append((t1.user - t0.user + t1.system - t0.system) / N)
        run_logs = logs / "bench-shell" / "argv-0"
        logged = sum(1 for _ in run_logs.iterdir()) if run_logs.exists() else 0
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
    print(f"log files written per dagd run with a log_dir: {logged} (out + err per step)")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ratio = rates["dagd argv, log_dir"] / base
    print(
        f"dagd (argv, with logs) / bare trio = {ratio:.2f} (requirement >= {RATIO_LIMIT}): "
        f"{'OK' if ratio >= RATIO_LIMIT else 'NOT MET'}"
    )
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
    what_if = rates["what-if: dagd argv, log_dir=None, setpgid"]
    print(
        f"what-if setpgid instead of setsid: dagd (argv, log_dir=None) / bare trio = "
        f"{what_if / base:.2f} (vs {nolog / base:.2f} with setsid)"
    )
    print(f"bare trio / subprocess.run = {base / rates['subprocess.run, 2 threads']:.2f}")


if __name__ == "__main__":
    main()
