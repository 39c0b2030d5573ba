"""The worker side of the Dask executor on its own, in this process (no cluster: worker.py
needs Dask only to find its worker): the worker-side timeout, stopping by key, and the reaping
of steps whose worker is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import trio
from clienthelp import await_for
from conftest import alive, context, pids_from, shell

from dagd.runtime.dask import worker
from dagd.runtime.local.procs import process_start


class Sent:
    """Collects the messages an attempt sends (its output, then its result)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)

    def output(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "stream" in e]

    def text(self, stream: str = "out") -> str:
        return b"".join(e["data"] for e in self.output() if e["stream"] == stream).decode()


def run_shell(command: str, key: str = "dagd/r/s/1", **kw: Any) -> tuple[dict[str, Any], Sent]:
    """One shell attempt through the worker's entry point; its result and what it sent."""
    sent = Sent()
    attempt = worker.RemoteAttempt(key, shell("s", command, **kw), context("s"), 0.3)
    result = worker.perform_attempt(attempt, sent, "tcp://worker")
    assert sent.events[-1] == {"key": key, "result": result}  # the result comes last
    assert result["chunks"] == len(sent.output())
    return result, sent


def outcome(result: dict[str, Any]) -> tuple[bool, str | None, bool]:
    return result["ok"], result["error"], result["timed_out"]


def test_the_worker_enforces_the_timeout_itself(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result, sent = run_shell(f"echo before; sleep 300 & echo $$ $! > {pids}; wait", timeout=0.5)
    assert outcome(result) == (False, "timed out after 0.5s", True)
    assert result["worker"] == "tcp://worker"
    assert sent.text() == "before\n"
    assert alive(trio.run(pids_from, pids)) == []


def test_output_goes_in_bounded_chunks_in_order() -> None:
    result, sent = run_shell("seq 1 30000; echo oops >&2; exit 4")
    assert outcome(result) == (False, "exit code 4: oops", False)
    assert all(len(e["data"]) <= worker.CHUNK_SIZE for e in sent.output())
    assert [e["seq"] for e in sent.output()] == list(range(len(sent.output())))
    assert sent.text() == "".join(f"{i}\n" for i in range(1, 30001))
    assert sent.text("err") == "oops\n"


def test_stop_attempts_kills_the_group_of_the_key_and_refuses_unknown_keys(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(
            run_shell(f"sleep 300 & echo $$ $! > {pids}; wait", key="dagd/r/a/1")
        )
    )
    thread.start()
    found = trio.run(pids_from, pids)
    stopped = trio.run(_stop, ["dagd/r/a/1", "dagd/r/never/1"], 0.3)
    thread.join(5)
    assert stopped == ["dagd/r/a/1"]
    assert alive(found) == []
    assert outcome(results[0][0]) == (False, "stopped", False)
    # The key that was not running is refused when it comes later.
    late, sent = run_shell("echo should not run", key="dagd/r/never/1")
    assert outcome(late) == (False, "stopped before it started", False)
    assert sent.output() == []


def test_a_second_stop_without_grace_cuts_the_first_ones_grace_short(tmp_path: Path) -> None:
    # A step that ignores SIGTERM, stopped with a long grace, then again with none (kill_now).
    pids = tmp_path / "pids"
    results: list[Any] = []
    command = f"trap '' TERM; sleep 300 & echo $$ $! > {pids}; wait; wait"
    thread = threading.Thread(target=lambda: results.append(run_shell(command, key="dagd/r/k/1")))
    thread.start()
    found = trio.run(pids_from, pids)

    async def stop_twice() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop, ["dagd/r/k/1"], 30.0)
            await trio.sleep(0.2)
            start = trio.current_time()
            await _stop(["dagd/r/k/1"], 0.0)
            await await_for(lambda: not alive(found), 5)
            return trio.current_time() - start

    assert trio.run(stop_twice) < 2.0
    thread.join(5)
    assert outcome(results[0][0]) == (False, "stopped", False)


async def _stop(keys: list[str], grace: float) -> list[str]:
    # stop_attempts runs on the worker's asyncio loop; here, on one of its own.
    import asyncio

    return await trio.to_thread.run_sync(lambda: asyncio.run(worker.stop_attempts(keys, grace)))


def test_leftovers_of_a_dead_worker_are_killed_and_a_live_ones_are_not() -> None:
    # A "worker" that exits at once: its pid and start time name a process that is gone.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_start = process_start(gone.pid)
    gone.wait()
    orphan = subprocess.Popen(
        ["sleep", "300"],
        env={**os.environ, worker.OWNER_VAR: f"{gone.pid}:{gone_start}"},
        process_group=0,
    )
    kept = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, worker.OWNER_VAR: worker.owner_marker()}
    )
    try:
        killed = worker.kill_orphaned_steps()
        assert orphan.wait(5) == -signal.SIGKILL
        assert orphan.pid in killed and kept.pid not in killed
        assert kept.poll() is None
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()
