"""A Dask LocalCluster for the tests of the Dask executor: two worker processes on 127.0.0.1,
started once per session (about 2 s) and closed at its end.

Each test module skips itself (`pytest.importorskip("distributed", reason=NEEDS_DASK)`) when
Dask distributed (the `dask` extra) is not installed, so this file imports it only when a
cluster is made. The scheduler runs in this process with `allowed-failures` 0, as
docs/dask.md asks of a cluster for dagd. The workers are spawned processes: they inherit this
process's sys.path (so `stepfuncs` from tests/support imports there) and its environment,
which holds `SECRET_VAR` to show that a step on a worker does not see the worker's own
variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from clienthelp import await_for

from dagd.core.model import StepSpec
from dagd.runtime.executor import StepContext

if TYPE_CHECKING:
    from distributed import LocalCluster

#: Why the tests of this folder are skipped without the `dask` extra.
NEEDS_DASK = "Dask distributed is not installed: pip install -e '.[dask]'"
#: Set in the workers' environment; a step must not see it.
SECRET_VAR = "DAGD_TEST_WORKER_SECRET"


@contextlib.contextmanager
def local_cluster(workers: int, *, port: int = 0, processes: bool = True) -> Iterator[LocalCluster]:
    """A LocalCluster on 127.0.0.1 as dagd wants one: no re-run of a task whose worker died, no
    fixed dashboard port, two threads per worker, quiet logs."""
    import dask
    from distributed import LocalCluster

    os.environ[SECRET_VAR] = "do-not-leak"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=2,
            processes=processes,
            protocol="tcp://",  # not the in-process transport, even with processes=False
            host="127.0.0.1",
            scheduler_port=port,
            dashboard_address="127.0.0.1:0",  # its HTTP server runs anyway: any free port
            silence_logs=logging.CRITICAL,
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[LocalCluster]:
    """The shared two-worker cluster (tests must not kill its workers)."""
    with local_cluster(2) as cluster:
        yield cluster


def context(step_id: str, run_id: str | None = None, **params: str) -> StepContext:
    """Attempt 1 of `step_id` in a run of its own (unless `run_id` is given)."""
    return StepContext("dag", run_id or uuid.uuid4().hex[:12], step_id, 1, params)


def shell(step_id: str, command: str, **kw: Any) -> StepSpec:
    """A shell step on the Dask executor."""
    return StepSpec(step_id, command=command, executor="dask", **kw)


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` that are live processes (not zombies)."""
    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


async def pids_from(path: Path) -> list[int]:
    """The pids a step wrote into `path` (one line, space-separated), once it has."""
    text = await await_for(
        lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(), 10
    )
    return [int(p) for p in text.split()]
