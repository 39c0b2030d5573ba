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
from conftest import alive, context, pids_from, shell

from dagd.runtime.dask import worker
from dagd.runtime.local.procs import process_start


class Sent:
    """Collects the events a step's output sends."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)

    def text(self, stream: str = "out") -> str:
        return b"".join(e["data"] for e in self.events if e["stream"] == stream).decode()


def run_shell(command: str, key: str = "dagd/r/s/1", **kw: Any) -> tuple[Any, Sent]:
    """One shell attempt through the worker's code, with its entry in the table."""
    sent = Sent()
    output = worker._Output(key, sent)
    entry = worker._Entry()
    with worker._lock:
        worker._running[key] = entry
    try:
        attempt = worker.RemoteAttempt(key, shell("s", command, **kw), context("s"), 0.3)
        result = worker._run_shell(attempt, entry, output)
    finally:
        with worker._lock:
            worker._running.pop(key, None)
    output.flush()
    return result, sent


def test_the_worker_enforces_the_timeout_itself(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    result, sent = run_shell(f"echo before; sleep 300 & echo $$ $! > {pids}; wait", timeout=0.5)
    assert result == (False, "timed out after 0.5s", True)
    assert sent.text() == "before\n"
    assert alive(trio.run(pids_from, pids)) == []


def test_output_goes_in_bounded_chunks_in_order() -> None:
    result, sent = run_shell("seq 1 30000; echo oops >&2; exit 4")
    assert result == (False, "exit code 4: oops", False)
    assert all(len(e["data"]) <= worker.CHUNK_SIZE for e in sent.events)
    assert [e["seq"] for e in sent.events] == list(range(len(sent.events)))
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
    stopped = trio.run(_stop, ["dagd/r/a/1", "dagd/r/never/1"])
    thread.join(5)
    assert stopped == ["dagd/r/a/1"]
    assert alive(found) == []
    assert results[0][0] == (False, "stopped", False)
    assert "dagd/r/never/1" in worker._refused  # it will not start here later


async def _stop(keys: list[str]) -> list[str]:
    # stop_attempts runs on the worker's asyncio loop; here, on one of its own.
    import asyncio

    return await trio.to_thread.run_sync(lambda: asyncio.run(worker.stop_attempts(keys, 0.3)))


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
