"""Helpers for the tests of an embedded daemon (`open_daemon` on a Config in tmp_path): the
config, DAG files a reload always sees as changed, and waiting for a condition or a run."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import trio

from dagd.core.config import Config
from dagd.core.model import FINISHED_RUN
from dagd.core.records import RunRecord
from dagd.daemon.daemon import Daemon
from dagd.daemon.store import StepRecord


def daemon_config(
    tmp_path: Path, *, reload_interval: float, folders: Iterable[str] = ("dags",)
) -> Config:
    """A Config with dags/ and state/ in tmp_path (`folders` made there), kill grace 0.5s and no
    progress events."""
    for name in folders:
        (tmp_path / name).mkdir()
    return Config(
        dags_dir=tmp_path / "dags",
        state_dir=tmp_path / "state",
        kill_grace=0.5,
        reload_interval=reload_interval,
        progress_interval=0.0,
    )


def write_dag_file(folder: Path, name: str, data: str | bytes) -> Path:
    """Write <folder>/<name>.toml as given; its mtime moves forward even within one coarse
    timestamp tick, so a reload (and the folder watcher) always sees a rewrite as a change."""
    path = folder / f"{name}.toml"
    old = path.stat().st_mtime_ns if path.exists() else None
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if old is not None and path.stat().st_mtime_ns <= old:
        os.utime(path, ns=(old + 10_000_000, old + 10_000_000))
    return path


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def wait_status(
    daemon: Daemon,
    run_id: str,
    statuses: Collection[str] = FINISHED_RUN,
    timeout: float = 10.0,
) -> tuple[RunRecord, dict[str, StepRecord]]:
    """Poll the database until the run has one of `statuses` (committed, so visible to all)."""
    with trio.fail_after(timeout):
        while True:
            found = await daemon.get_run(run_id)
            if found is not None and found[0].status in statuses:
                return found[0], {s.step_id: s for s in found[1]}
            await trio.sleep(0.01)
