"""Cleaning up after shell steps a dead daemon left running: the local executor's leftover
handle, and the proof (start time, boot id) that a process group is still the step's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import proctools as procs
import pytest

from dagd.runtime.executor import Leftover
from dagd.runtime.local.leftovers import clean_up, leftover_handle
from dagd.runtime.local.procs import boot_id, process_start

Group = tuple["subprocess.Popen[bytes]", str]


@pytest.fixture
def group() -> Iterator[Group]:
    """A step's process group as an earlier daemon left it: a shell and a grandchild, marked
    (proctools) and carrying a DAGD_RUN_ID."""
    mark = procs.new_mark()
    env = {**os.environ, procs.MARK_VAR: mark, "DAGD_RUN_ID": f"run-{mark}"}
    proc = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], env=env, process_group=0)
    try:
        deadline = time.monotonic() + 5
        while len(procs.live_processes(mark)) < 3:
            assert time.monotonic() < deadline, "the group never started"
            time.sleep(0.01)
        yield proc, mark
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def old_ticks(pid: int) -> int:
    """The start time as earlier dagd versions recorded it: field 22 of /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def test_the_start_time_is_in_the_unit_of_earlier_state_files(group: Group) -> None:
    proc, _ = group
    assert process_start(proc.pid) == old_ticks(proc.pid)


def test_a_recorded_group_is_killed(group: Group) -> None:
    proc, mark = group
    clean_up([Leftover("r", "s", leftover_handle("local", proc.pid))], set())
    assert procs.wait_gone(mark) == []


def test_a_handle_from_an_earlier_state_file_is_killed(group: Group) -> None:
    """The handle dagd/daemon/schema.py's migration 3 makes of an earlier dagd's columns."""
    proc, mark = group
    handle = {
        "executor": "local",
        "pgid": proc.pid,
        "start_ticks": old_ticks(proc.pid),
        "boot_id": boot_id(),
    }
    clean_up([Leftover("r", "s", handle)], set())
    assert procs.wait_gone(mark) == []


@pytest.mark.parametrize(
    "change", [{"start_ticks": -5}, {"boot_id": "another-boot"}, {"boot_id": None}]
)
def test_a_group_that_is_not_provably_the_steps_is_left_alone(
    group: Group, change: dict[str, object]
) -> None:
    proc, mark = group
    handle = {**leftover_handle("local", proc.pid), **change}  # a reused pid, another boot
    clean_up([Leftover("r", "s", handle)], set())
    assert len(procs.wait_gone(mark, 0.3)) == 3


def test_processes_of_an_unfinished_run_are_found_without_a_handle(group: Group) -> None:
    _, mark = group
    clean_up([], {f"run-{mark}"})
    assert procs.wait_gone(mark) == []
