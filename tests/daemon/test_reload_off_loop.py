"""The daemon loads and reloads its DAG folder off the event loop: a `call` module slow to
import (it sleeps, reads a network share) delays only its own DAG, never heartbeats, the
store's writer or the clients."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import trio
from daemonhelp import daemon_config, write_dag_file

from dagd.app import open_daemon

#: Seconds the test modules sleep when imported.
SLOW = 0.3


class Ticker:
    """A task that wakes every millisecond and notes the longest gap between two wake-ups
    (seconds): how long the event loop ran nothing else."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


def slow_module(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(
        "import threading, time\n"
        "IMPORTED_IN = threading.get_ident()  # the thread that ran the import\n"
        f"time.sleep({SLOW})\n"
        "def run(ctx):\n    pass\n"
    )


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "modules"
    monkeypatch.syspath_prepend(str(folder))
    return folder


async def test_start_and_reload_import_slow_modules_off_the_loop(
    tmp_path: Path, modules: Path
) -> None:
    """A DAG whose module sleeps 0.3 s at import, there at start and added later: a worker
    thread imports it and the loop never stalls for 0.15 s (measured: a few ms; on the loop
    it was the whole 0.3 s)."""
    stamp = time.monotonic_ns()
    first, second = f"dagd_slow_start_{stamp}", f"dagd_slow_reload_{stamp}"
    slow_module(modules, first)
    slow_module(modules, second)
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "first", f'[steps.a]\ncall = "{first}:run"\n')
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.sleep(0.01)
        started = time.perf_counter()
        async with open_daemon(config) as daemon:
            assert time.perf_counter() - started >= SLOW
            assert set(daemon.dags) == {"first"}
            at_start = ticker.longest
            write_dag_file(config.dags_dir, "second", f'[steps.a]\ncall = "{second}:run"\n')
            await daemon.reload()
            await trio.sleep(0.01)
            assert set(daemon.dags) == {"first", "second"}
        nursery.cancel_scope.cancel()
    loop = threading.get_ident()
    assert loop != sys.modules[first].IMPORTED_IN, "imported on the loop's thread at start"
    assert loop != sys.modules[second].IMPORTED_IN, "imported on the loop's thread in a reload"
    # On the loop each import stalled it SLOW seconds; off it, a few ms alone. The bound is
    # below SLOW yet leaves room for a loaded machine (CI runs two test workers on 2 cores).
    assert at_start < SLOW / 2, f"the loop stalled {at_start:.3f}s at start"
    assert ticker.longest < SLOW / 2, f"the loop stalled {ticker.longest:.3f}s in a reload"
