"""The local executor's leftover handle, and cleaning up after shell steps a dead daemon left.

A shell attempt's handle names its process group and proves whose it is:

    {"executor": "local", "pgid": 4242, "start_ticks": 66059, "boot_id": "6f1c..."}

`pgid` is the step's first process (its pid is the group id), `start_ticks` when that process
started, in clock ticks since boot, and `boot_id` the boot it ran in (procs.py says why both are
needed). `start_ticks` and `boot_id` may be null where they could not be read; without a boot
id a group is never killed. State files of dagd before schema version 3 kept these three in
columns of their own; dagd/daemon/schema.py converted them to this handle once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from dagd.runtime.executor import Leftover, LeftoverHandle
from dagd.runtime.local.procs import (
    boot_id,
    kill_leftover_group,
    kill_processes_and_groups,
    process_start,
    processes_of_runs,
)

log = logging.getLogger("dagd.runtime.local")


def leftover_handle(executor: str, pgid: int) -> LeftoverHandle:
    """The handle of a shell attempt whose process group `pgid` has just been spawned (its
    leader may have exited already: an unreaped leader keeps its start time). Reads /proc:
    call it off the event loop."""
    return {
        "executor": executor,
        "pgid": pgid,
        "start_ticks": process_start(pgid),
        "boot_id": boot_id(),
    }


def clean_up(leftovers: Collection[Leftover], run_ids: Collection[str]) -> None:
    """SIGKILL what shell attempts of unfinished runs left running: first each recorded
    process group that provably is still the step's, then any process whose environment
    carries one of `run_ids` as DAGD_RUN_ID (a group spawned but not yet recorded when the
    daemon died, or a process that left its group), with its group. Logs a WARNING for each
    kill. Blocking (walks /proc): a few ms."""
    for leftover in leftovers:
        handle = leftover.handle
        pgid, start, boot = handle.get("pgid"), handle.get("start_ticks"), handle.get("boot_id")
        if not isinstance(pgid, int) or pgid <= 1:  # never a broadcast or init's group
            continue
        start = start if isinstance(start, int) else None
        boot = boot if isinstance(boot, str) else None
        if kill_leftover_group(pgid, start, boot):
            log.warning(
                "killed leftover processes of %s/%s (process group %s)",
                leftover.run_id,
                leftover.step_id,
                pgid,
            )
    strays = processes_of_runs(set(run_ids))
    if strays:
        kill_processes_and_groups(sorted(strays))
        for run_id in sorted(set(strays.values())):
            pids = sorted(pid for pid, rid in strays.items() if rid == run_id)
            log.warning("killed leftover processes of run %s: %s", run_id, pids)
