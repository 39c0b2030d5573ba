"""Identifying and cleaning up step processes left behind by an earlier daemon (Linux /proc).

A pid alone is not an identity: pids are reused. A process is ours only if its start time (clock
ticks since boot, field 22 of /proc/<pid>/stat) and the boot id both match what we recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def kill_leftover_group(pgid: int, recorded_start: int | None, recorded_boot: str | None) -> bool:
    """SIGKILL the process group of a step from an earlier daemon, if it is provably that group.

    - Different boot (or unknown): nothing from before the reboot can be alive; do nothing.
    - Leader alive with the recorded start time: our group; kill it.
    - Leader alive with another start time: the pid was reused; leave it alone.
    - Leader gone: Linux never hands out a pid that is still in use as a process group id, so
      any process still in group `pgid` is a leftover of ours; kill the group.
    """
    if recorded_boot is None or recorded_boot != boot_id():
        return False
    start = process_start(pgid)
    if start is not None and start != recorded_start:
        return False
    if start is None and not group_members(pgid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        return True
    return False


def processes_of_runs(run_ids: set[str]) -> dict[int, str]:
    """Live processes (pid -> run id) whose environment says they belong to one of `run_ids`
    (every step gets DAGD_RUN_ID). This finds a step's processes even when its process group
    was never recorded (a daemon killed in the moment between a spawn and its next commit)."""
    wanted = {f"DAGD_RUN_ID={run_id}".encode(): run_id for run_id in run_ids}
    found: dict[int, str] = {}
    if not wanted:
        return found
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, a kernel thread, or not ours to read
            continue
        for var in environ.split(b"\0"):
            run_id = wanted.get(var)
            if run_id is not None:
                found[int(entry.name)] = run_id
                break
    return found


def kill_processes_and_groups(pids: list[int]) -> None:
    """SIGKILL each process and, unless it is ours, its whole process group."""
    own = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            pgid = os.getpgid(pid)
            if pgid != own:
                os.killpg(pgid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


def raise_open_files_limit(want: int = 65536) -> tuple[int, int]:
    """Raise this process's soft limit on open files towards `want` (never past the hard
    limit); returns (before, after). Many systems start processes at 1024, which a daemon
    runs out of: each running shell step holds five descriptors (two pipes, a pidfd, two
    log files) and each WebSocket client one. Steps inherit the raised limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
