"""A Dask LocalCluster for the tests of the Dask executor: two worker processes on 127.0.0.1,
started once per session (about 2 s) and closed at its end.

Skipped as a whole when Dask distributed (the `dask` extra) is not installed. Its scheduler
runs in this process with `allowed-failures` 0, as docs/dask.md asks of a cluster for dagd.
The workers are spawned processes: they inherit this process's sys.path (so `stepfuncs` from
tests/support imports there) and its environment, which holds `SECRET_VAR` to show that a step
on a worker does not see the worker's own variables.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import pytest

pytest.importorskip(
    "distributed", reason="Dask distributed is not installed: pip install 'dagd[dask]'"
)

import dask
from distributed import LocalCluster

#: Set in the workers' environment; a step must not see it.
SECRET_VAR = "DAGD_TEST_WORKER_SECRET"


@contextlib.contextmanager
def local_cluster(workers: int, *, port: int = 0, processes: bool = True) -> Iterator[LocalCluster]:
    """A LocalCluster on 127.0.0.1 as dagd wants one: no re-run of a task whose worker died, no
    fixed dashboard port, two threads per worker, quiet logs."""
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
