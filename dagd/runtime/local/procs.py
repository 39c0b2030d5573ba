"""Process groups of local steps, and telling whether a process is still the one dagd started
(walks over all processes go through psutil; one process's own facts are read from /proc).

A pid alone is not an identity: pids are reused. A process is a step's only if its start time
and the boot id both match what was recorded when the step was spawned.

Start times are clock ticks since boot: field 22 of /proc/<pid>/stat, read as it is (one small
read per shell attempt, in its worker thread), the unit of the start times in state files
written by earlier dagd versions too. The tick count never changes, unlike psutil's
`create_time` (seconds since the epoch, which move when the wall clock is stepped), so it
compares exactly with any recorded one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import time
from pathlib import Path

import psutil

from dagd.runtime.local.environment import RUN_ID_VAR

log = logging.getLogger("dagd.runtime.local")


@functools.cache
def boot_id() -> str | None:
    """This boot's id (/proc/sys/kernel/random/boot_id, Linux), None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot; None if there is no such process (a
    zombie still has its start time)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes whose process group is `pgid`, as pids."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):  # gone meanwhile
            continue
    return members


def group_alive(pgid: int) -> bool:
    """Does any live process remain in the group? Zombies do not count: where PID 1 does not
    reap orphans (some containers), a step's dead background children linger as zombies."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; a group that is gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_leftover_group(pgid: int, recorded_start: int | None, recorded_boot: str | None) -> bool:
    """SIGKILL the process group of a step from an earlier daemon, if it is provably that group;
    True if a signal was sent. `recorded_start` is in clock ticks since boot.

    - Different boot (or unknown): nothing from before the reboot can be alive; do nothing.
    - Leader alive with the recorded start time: the step's group; kill it.
    - Leader alive with another start time: the pid was reused; leave it alone.
    - Leader gone: Linux never hands out a pid that is still in use as a process group id, so
      any process still in group `pgid` is a leftover of the step; kill the group.
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
    """Live processes (pid -> run id) whose environment says they belong to one of `run_ids`:
    every local step's processes carry DAGD_RUN_ID (environment.py), so this finds them even
    when their process group was never recorded. This process is excluded; processes whose
    environment cannot be read (another user's, kernel threads, zombies) are skipped."""
    found: dict[int, str] = {}
    if not run_ids:
        return found
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            run_id = proc.environ().get(RUN_ID_VAR)
        except psutil.Error:
            continue
        if run_id in run_ids:
            found[proc.pid] = run_id
    return found


def kill_processes_and_groups(pids: list[int]) -> None:
    """SIGKILL each process and, unless it is dagd's own, its whole process group."""
    own = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            pgid = os.getpgid(pid)
            if pgid != own:
                os.killpg(pgid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_CONTAIN_LIMIT = 5.0  # seconds a step's end waits for its processes to be gone
#: How long (seconds) `contain` re-reads an orphan whose environment reads as empty.
_UNDECIDED_LIMIT = 0.05


@functools.cache
def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux 3.4+): a process that a step started and
    whose parent exits is re-parented to dagd instead of PID 1, so it can still be found
    (and must be reaped: `contain` does). True if it worked; done once per process."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # not Linux, or no prctl
        return False


def _orphans() -> list[int]:
    """This process's children listed under its main thread: the kernel re-parents orphans
    to the subreaper's first live thread, the main one (step leaders are children of the
    worker threads that forked them, and are not listed here while those live). Empty where
    /proc/<pid>/task/<tid>/children does not exist (CONFIG_PROC_CHILDREN)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        return []


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first);
    None if `pid` is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()  # the name may hold spaces and ')'


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of `pid` from /proc/<pid>/stat; None if it is gone. A
    zombie keeps the group it died in."""
    fields = _stat_fields(pid)
    return None if fields is None else (fields[0].decode(), int(fields[2]))


def _attempt_of(pid: int) -> tuple[str | None, str | None, str | None]:
    """(DAGD_RUN_ID, DAGD_STEP_ID, DAGD_ATTEMPT) from `pid`'s environment (Nones if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None, None, None
    found: dict[bytes, str] = {}
    for item in raw.split(b"\0"):
        name, _, value = item.partition(b"=")
        if name in _IDENT_VARS:
            found[name] = value.decode("utf-8", "replace")
    return found.get(b"DAGD_RUN_ID"), found.get(b"DAGD_STEP_ID"), found.get(b"DAGD_ATTEMPT")


_IDENT_VARS = (RUN_ID_VAR.encode(), b"DAGD_STEP_ID", b"DAGD_ATTEMPT")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def contain(pgid: int, ident: tuple[str, str, str]) -> int:
    """After a shell attempt ended and its leader `pgid` was reaped: kill and reap what it
    left. Blocking (call it from a worker thread); returns how many escaped processes it
    killed.

    The attempt's process group has had SIGKILL already; this waits (at most 5 s) until the
    group is empty, and SIGKILLs (with their process groups) the orphans whose environment
    names this attempt (`ident`: run id, step id, attempt number as DAGD_RUN_ID,
    DAGD_STEP_ID, DAGD_ATTEMPT): processes that left the group (`setsid`, `setsid -f`,
    `setpgid`) and whose parent exited, which the subreaper (`become_subreaper`) brought
    back to dagd. Their children come back in turn and are found on the next pass. Live
    orphans of other attempts are left alone.

    It also reaps every dead orphan outside dagd's own process group, whichever step it
    came from (the subreaper inherits them all; some exit on their own): every shell step
    runs in a group of its own, while the processes dagd's own code starts (as a Python
    step may) stay in dagd's group and are listed under the thread that forked them, so
    their exit status is never taken from their owner. The common case (nothing left)
    costs one killpg and one read of a small /proc file."""
    killed: set[int] = set()  # SIGKILLed here, not yet reaped
    count = 0
    deadline = None
    undecided_until = None  # how long an orphan without a readable environment is re-read
    own = os.getpgrp()
    while True:
        escaped = undecided = False
        for pid in _orphans():
            stat = _stat(pid)
            if stat is None:
                continue
            state, group = stat
            if state in ("Z", "X"):
                if group != own or pid in killed:
                    _reap(pid)
                    killed.discard(pid)
                continue
            found = _attempt_of(pid)
            if found == ident:
                escaped = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if group not in (own, pgid):
                        os.killpg(group, signal.SIGKILL)
                    os.kill(pid, signal.SIGKILL)
                    count += pid not in killed
                    killed.add(pid)
            elif found == (None, None, None) and group != own:
                # In the middle of an exec (`nohup setsid sleep`: two in a row) the kernel
                # shows an empty environment for a moment: look again shortly, for a bounded
                # time (an orphan started with an empty environment is out of reach anyway).
                undecided = True
        if undecided:
            now = time.monotonic()
            undecided_until = undecided_until or now + _UNDECIDED_LIMIT
            undecided = now < undecided_until
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            if not escaped and not undecided and not any(_stat(pid) for pid in killed):
                return count
        if deadline is None:
            deadline = time.monotonic() + _CONTAIN_LIMIT
        elif time.monotonic() > deadline:
            log.warning("process group %s outlived SIGKILL by %gs", pgid, _CONTAIN_LIMIT)
            return count
        time.sleep(0.002)


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
