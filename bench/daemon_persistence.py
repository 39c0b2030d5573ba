"""What persistence costs: a 10,000-step chain of no-op async callables run through the daemon
(open_daemon: every event numbered, written to SQLite in batches by the store's writer task
with the runs, steps and attempts tables it folds into, fanned out to one hub subscriber that
drains them) versus the same run through dagd.runtime.engine.run_dag alone (events into a
counter).

    python bench/daemon_persistence.py              # median of 3 runs each, ~10 s
    python bench/daemon_persistence.py --reps 1

Both runs have a ticker task beside them, `await trio.sleep(0.01)` in a loop; its worst lateness
(how long after its deadline it woke) shows how long the event loop was kept busy at a stretch.
Requirement: the daemon run takes at most 3x the engine-only run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchsteps: the no-op callables

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.events import DagRunStatusEvent
from dagd.core.model import DagSpec, RunStatus
from dagd.core.runstate import RunState
from dagd.daemon.dagfolder import load_dag_file
from dagd.runtime.engine import run_dag
from dagd.runtime.local.executor import LocalExecutor

N = 10_000
RATIO_LIMIT = 3.0
DAG_ID = "chain"


def chain_toml(n: int) -> str:
    lines = [f'id = "{DAG_ID}"', 'description = "10,000 no-op async steps in a chain"']
    for i in range(n):
        lines.append(f"[steps.s{i}]")
        lines.append('call = "benchsteps:async_noop"')
        if i:
            lines.append(f'depends_on = ["s{i - 1}"]')
    return "\n".join(lines) + "\n"


class Ticker:
    """Sleeps 10 ms at a time and records how late each wake-up is."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.lateness: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            deadline = trio.current_time() + 0.01
            await trio.sleep_until(deadline)
            late = trio.current_time() - deadline
            self.lateness.append(late)
            self.worst = max(self.worst, late)


class Result:
    def __init__(
        self, seconds: float, cpu: float, events: int, ticker: Ticker, batches: int = 0
    ) -> None:
        self.seconds = seconds
        self.cpu = cpu  # process CPU time, every thread (checkpoints run in a worker thread)
        self.events = events
        self.batches = batches
        self.worst_late = ticker.worst
        self.p99_late = (
            statistics.quantiles(ticker.lateness, n=100)[98]
            if len(ticker.lateness) >= 2
            else ticker.worst
        )


async def engine_only(dag: DagSpec, config: Config, rep: int) -> Result:
    count = 0

    def publish(event: object) -> None:
        nonlocal count
        count += 1

    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        state = RunState(dag, f"engine-{rep}", progress_interval=config.progress_interval)
        t0, c0 = time.perf_counter(), time.process_time()
        status = await run_dag(state, LocalExecutor(), publish)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        nursery.cancel_scope.cancel()
    assert status is RunStatus.SUCCESS, status
    return Result(seconds, cpu, count, ticker)


async def through_daemon(config: Config) -> Result:
    async with open_daemon(config) as daemon:
        assert DAG_ID in daemon.dags, daemon.problems
        ticker = Ticker()
        received = 0
        done = trio.Event()
        # The default buffer (server.send_buffer, 1024 events): the hub hands over each
        # committed batch at once, so a batch bigger than that would cut this subscriber off.
        sub = daemon.subscribe()

        async def drain(run_id: str) -> None:
            # Greedy: take everything already queued at each wake-up. A consumer that takes one
            # event per checkpoint gets fewer turns than the run needs to publish (2-3 events
            # per step), falls behind by a batch or more, and is cut off at 1024.
            nonlocal received
            try:
                while True:
                    batch = [await sub.get()]
                    with contextlib.suppress(trio.WouldBlock):
                        while True:
                            batch.append(sub.get_nowait())
                    for stored in batch:
                        if getattr(stored.event, "run_id", None) != run_id:
                            continue
                        received += 1
                        ev = stored.event
                        if isinstance(ev, DagRunStatusEvent) and ev.status.finished:
                            assert ev.status is RunStatus.SUCCESS, ev
                            return
            except trio.EndOfChannel:
                pass  # the hub cut us off (checked below)
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(ticker.run)
            batches0 = daemon.store.batches
            t0, c0 = time.perf_counter(), time.process_time()
            run_id = await daemon.trigger(DAG_ID)
            nursery.start_soon(drain, run_id)
            await done.wait()  # the final status is committed and delivered
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            batches = daemon.store.batches - batches0
            nursery.cancel_scope.cancel()
        sub.close()
        assert not sub.overflowed, "the subscriber fell behind its buffer"
        rows = await daemon.store.read("SELECT count(*) FROM events WHERE run_id=?", (run_id,))
        assert rows[0][0] == received, (rows, received)
    return Result(seconds, cpu, received, ticker, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=N)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dagd-bench-") as tmp:
        root = Path(tmp)
        (root / "dags").mkdir()
        path = root / "dags" / f"{DAG_ID}.toml"
        path.write_text(chain_toml(args.steps))
        dag = load_dag_file(path)
        config = Config(dags_dir=root / "dags", state_dir=root / "state")
        engine: list[Result] = []
        daemon: list[Result] = []
        for rep in range(args.reps):
            gc.collect()
            engine.append(trio.run(engine_only, dag, config, rep))
            gc.collect()
            daemon.append(trio.run(through_daemon, config))
            e, d = engine[-1], daemon[-1]
            print(
                f"rep {rep + 1}: engine {e.seconds:.3f}s (cpu {e.cpu:.3f}s, {e.events} events), "
                f"daemon {d.seconds:.3f}s (cpu {d.cpu:.3f}s, {d.events} events, "
                f"{d.batches} batches)"
            )
        db_size = sum(p.stat().st_size for p in (root / "state").glob("dagd.sqlite3*"))

    e_sec = statistics.median(r.seconds for r in engine)
    d_sec = statistics.median(r.seconds for r in daemon)
    ratio = d_sec / e_sec
    e_cpu = statistics.median(r.cpu for r in engine)
    d_cpu = statistics.median(r.cpu for r in daemon)
    d_mid = sorted(daemon, key=lambda r: r.seconds)[len(daemon) // 2]
    e_mid = sorted(engine, key=lambda r: r.seconds)[len(engine) // 2]
    per_step = 1e6 / args.steps
    lines = [
        f"{args.steps} no-op async steps in a chain, median of {args.reps}:",
        f"  engine only (run_dag)          {e_sec:7.3f} s   {e_sec * per_step:6.1f} µs/step",
        f"  daemon (SQLite + 1 subscriber) {d_sec:7.3f} s   {d_sec * per_step:6.1f} µs/step",
        f"  ratio daemon/engine            {ratio:7.2f}x  (requirement <= {RATIO_LIMIT:g}x)",
        f"  CPU time engine / daemon       {e_cpu:7.3f} s / {d_cpu:.3f} s"
        f"  ({d_cpu / e_cpu:.2f}x, all threads)",
        f"  events persisted               {d_mid.events:7d}     "
        f"{d_mid.events / d_sec:,.0f} events/s",
        f"  store batches                  {d_mid.batches:7d}     "
        f"{d_mid.events / max(1, d_mid.batches):,.0f} events/batch",
        f"  ticker lateness, engine        max {1000 * e_mid.worst_late:5.1f} ms"
        f"   p99 {1000 * e_mid.p99_late:5.1f} ms",
        f"  ticker lateness, daemon        max {1000 * d_mid.worst_late:5.1f} ms"
        f"   p99 {1000 * d_mid.p99_late:5.1f} ms",
        f"  database after {args.reps} daemon runs  {db_size / 1e6:7.1f} MB",
    ]
    print()
    print("\n".join(lines))
    if ratio > RATIO_LIMIT:
        print(f"FAIL: daemon is {ratio:.2f}x engine-only (limit {RATIO_LIMIT:g}x)")
        sys.exit(1)


if __name__ == "__main__":
    main()
