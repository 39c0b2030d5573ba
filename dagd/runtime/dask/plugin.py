"""The worker plugin that kills what dagd steps of dead workers left running, and the steps of
a worker that closes.

A worker that dies (SIGKILL, out of memory, a lost machine coming back) cannot stop its steps:
their process groups outlive it (a parent-death signal would reach only each group's first
process). Every step's processes carry worker.OWNER_VAR, naming the worker process that
started them; when a worker starts (a nanny restarting it, or a new one on the same host), this
plugin kills the processes whose worker is gone. Steps of live workers are never touched.

A worker that closes (its scheduler gone, scaled down, stopped) kills its running steps
first: their task threads would otherwise keep the closing process alive, with the steps,
beyond the reach of anyone. The attempts fail on the daemon's side (a lost worker or a lost
connection).

The daemon registers it with `Client.register_plugin` each time it connects; the scheduler
hands it to every worker that joins later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from distributed import WorkerPlugin
from distributed.core import Status

from dagd.runtime.dask.worker import kill_all_attempts, kill_orphaned_steps

if TYPE_CHECKING:
    from distributed import Worker

log = logging.getLogger("dagd.runtime.dask")

#: The name the plugin is registered under (registering it again replaces it).
PLUGIN_NAME = "dagd-leftover-reaper"

_CLOSING = frozenset({Status.closing, Status.closing_gracefully, Status.closed, Status.failed})


class LeftoverReaper(WorkerPlugin):
    """On each worker's start, SIGKILL the leftovers of dagd steps whose worker is gone; on
    its close, SIGKILL its own running steps."""

    name = PLUGIN_NAME

    def setup(self, worker: Worker) -> None:
        """Called by the worker when it starts or when the plugin is registered."""
        killed = kill_orphaned_steps()
        if killed:
            log.warning(
                "worker %s killed processes of dagd steps whose worker is gone: %s",
                worker.address,
                killed,
            )

    def teardown(self, worker: Worker) -> None:
        """Called by the worker when it closes, and when the plugin is registered again
        (each time a daemon connects): only the first kills anything."""
        if worker.status not in _CLOSING:
            return
        killed = kill_all_attempts(f"stopped: the worker {worker.address} closed")
        if killed:
            log.warning("worker %s is closing: killed dagd steps %s", worker.address, killed)
