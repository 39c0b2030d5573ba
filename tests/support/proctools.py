"""Finding a test's processes in /proc, by a marker in their environment."""

from __future__ import annotations

import os
import time
import uuid

MARK_VAR = "DAGD_TEST_MARK"


def new_mark() -> str:
    return uuid.uuid4().hex


def _state(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces or parentheses, so split after the last ')'.
    return stat.rpartition(")")[2].split()[0]


def live_processes(mark: str) -> list[int]:
    """Pids of live (not zombie, not dead) processes whose environment has DAGD_TEST_MARK=mark.

    Zombies are ignored: PID 1 in this container may not reap orphans, and a zombie has already
    exited (its environ reads as empty anyway)."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _state(pid) not in (None, "Z", "X"):
            found.append(int(pid))
    return found


def wait_gone(mark: str, timeout: float = 3.0) -> list[int]:
    """Poll until no live process carries `mark` (SIGKILL is not instantaneous); returns what is
    still alive at the deadline (empty list: all gone). Blocking: call it after the run."""
    deadline = time.monotonic() + timeout
    while True:
        alive = live_processes(mark)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)
