"""Copying a step's output pipes while its first process runs: the loop that the local shell
thread (shellthread.py) and a Dask worker (dagd/runtime/dask/worker.py) share.

The loop ends when the step's first process exits, not when the pipes close: a background
grandchild may hold them open for much longer. A pidfd says when the process exits (Linux 5.3
and later); without one the loop looks every `LEADER_CHECK` seconds. The exited process is
not reaped here, so its pid (and process group id) stays the caller's to signal.

Each pipe has a sink, a callable that takes every chunk read (at most `READ_SIZE` bytes), in
order, in the calling thread. Nothing here imports trio.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable, Mapping

#: Most bytes read from a pipe at once.
READ_SIZE = 65536
#: After the step's first process exits, at most this many more bytes are copied per pipe: a
#: leftover that keeps writing (it is being killed) must not keep the attempt alive.
DRAIN_LIMIT = 16 * READ_SIZE
#: Seconds between looks whether the step exited, without a pidfd.
LEADER_CHECK = 0.05

Sink = Callable[[bytes], None]


def copy_until_exit(
    pid: int, sinks: Mapping[int, Sink], tick: Callable[[], float | None] | None = None
) -> set[int]:
    """Copy what each pipe (a read file descriptor in `sinks`) delivers to its sink until our
    child `pid` exits. `tick`, if given, is called once before waiting and after every wake-up
    (output, the exit, or its own wait over) and returns how many seconds may pass before it
    is called again (None: no limit). Returns the pipes that are still open (call `drain`
    on them once whatever else writes there has been stopped). Raises OSError from poll or
    read, and whatever a sink or `tick` raises."""
    try:
        leader = os.pidfd_open(pid)
    except OSError:  # Linux before 5.3, or a seccomp filter: look every LEADER_CHECK seconds
        leader = -1
    try:
        poller = select.poll()
        if leader >= 0:
            poller.register(leader, select.POLLIN)
        for fd in sinks:
            poller.register(fd, select.POLLIN)
        open_fds = set(sinks)
        wait = None if tick is None else tick()
        while True:  # a step may close its output and still run
            if leader < 0:
                wait = LEADER_CHECK if wait is None else min(wait, LEADER_CHECK)
            exited = False
            for fd, _ in poller.poll(None if wait is None else max(0.0, wait) * 1000):
                if fd == leader:
                    exited = True
                elif fd in open_fds:
                    data = os.read(fd, READ_SIZE)
                    if data:
                        sinks[fd](data)
                    else:
                        poller.unregister(fd)
                        open_fds.discard(fd)
            if leader < 0 and has_exited(pid):
                exited = True
            if tick is not None:
                wait = tick()
            if exited:
                return open_fds
    finally:
        if leader >= 0:
            os.close(leader)


def has_exited(pid: int) -> bool:
    """Has our child `pid` exited? It stays a zombie (not reaped), so its pid stays ours."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def drain(fd: int, sink: Sink) -> None:
    """Copy to `sink` what pipe `fd` holds right now (at most `DRAIN_LIMIT` bytes), without
    waiting for writers that are left. Leaves `fd` non-blocking."""
    os.set_blocking(fd, False)
    copied = 0
    with contextlib.suppress(BlockingIOError):
        while copied < DRAIN_LIMIT and (data := os.read(fd, READ_SIZE)):
            sink(data)
            copied += len(data)
