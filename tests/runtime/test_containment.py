"""Nothing a shell step started outlives the step, even a process that left its process group
(`setsid`, `setsid -f`, a double fork): dagd is their subreaper and kills them when the attempt
ends, however it ends (success, failure, timeout, cancel, a second signal's `kill_now`).

Real processes throughout; each test's processes carry a marker (DAGD_TEST_MARK) in their
environment, which escaped processes inherit, so /proc tells what survived.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import proctools as procs
import pytest
import trio

from dagd.core.model import StepSpec
from dagd.runtime.executor import StepContext
from dagd.runtime.local.executor import LocalExecutor

GRACE = 0.3

# Each way out of the step's process group, as a shell command that leaves `sleep`s behind.
ESCAPES = {
    "setsid &": "setsid sleep 3005 & sleep 3006",
    "setsid -f": "setsid -f sleep 3005; sleep 3006",
    "double fork": "( (setsid sleep 3005 &) &) ; sleep 3006",
    "nohup setsid": "nohup setsid sleep 3005 >/dev/null 2>&1 & sleep 3006",
    "setpgid": (  # a process group of its own in the same session, as job control makes
        'python3 -c \'import os; os.setpgid(0, 0); os.execvp("sleep", ["sleep", "3005"])\''
        " & sleep 3006"
    ),
    "escapee's own children": (
        "setsid sh -c 'sleep 3005 & setsid sleep 3007 & sleep 3008' & sleep 3006"
    ),
}


def ctx(step_id: str = "s", attempt: int = 1) -> StepContext:
    return StepContext("dag1", "run1", step_id, attempt, {})


def shell(command: str, mark: str, **kw: object) -> StepSpec:
    return StepSpec("s", command=command, env={procs.MARK_VAR: mark}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def executor(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(log_dir=tmp_path / "logs", grace=GRACE)


@pytest.fixture
def mark() -> object:
    mark = procs.new_mark()
    yield mark
    for pid in procs.live_processes(mark):  # never leave a failed test's processes behind
        os.kill(pid, 9)


async def wait_for(mark: str, count: int) -> None:
    with trio.fail_after(5):
        while len(procs.live_processes(mark)) < count:
            await trio.sleep(0.01)


def zombie_children() -> list[int]:
    """Zombies among this process's children (the orphans a subreaper must reap). Once a
    test made this process a subreaper, a `dagd` subprocess killed by an earlier test leaves
    its orphans here too: compare with what was there before."""
    me = os.getpid()
    found = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{task}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            if procs._state(pid) == "Z":
                found.append(int(pid))
    return found


@pytest.mark.parametrize("command", ESCAPES.values(), ids=ESCAPES.keys())
async def test_timeout_kills_processes_that_left_the_group(
    executor: LocalExecutor, mark: str, command: str
) -> None:
    zombies = set(zombie_children())  # earlier tests' (e.g. a killed daemon's orphans)
    result = await executor.run(shell(command, mark, timeout=1.0), ctx())
    assert not result.ok and result.error == "timed out after 1s"
    assert procs.wait_gone(mark, 2.0) == []
    assert set(zombie_children()) - zombies == set()


@pytest.mark.parametrize("command", ESCAPES.values(), ids=ESCAPES.keys())
async def test_success_and_failure_kill_what_escaped(
    executor: LocalExecutor, mark: str, command: str
) -> None:
    zombies = set(zombie_children())
    leave = command.replace("sleep 3006", "true")  # the step itself ends at once
    result = await executor.run(shell(leave, mark), ctx())
    assert result.ok, result.error
    failing = await executor.run(shell(leave.replace("true", "exit 3"), mark), ctx(attempt=2))
    assert failing.error == "exit code 3"
    assert procs.wait_gone(mark, 2.0) == []
    assert set(zombie_children()) - zombies == set()


async def test_cancel_kills_what_escaped(executor: LocalExecutor, mark: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor.run, shell(ESCAPES["setsid &"], mark), ctx())
        await wait_for(mark, 3)  # sh, sleep 3005 (its own session), sleep 3006
        nursery.cancel_scope.cancel()
    assert procs.wait_gone(mark, 2.0) == []


async def test_other_attempts_escapees_are_left_alone(executor: LocalExecutor) -> None:
    """A step's end kills its own escaped processes only: another running step keeps its."""
    mine, other = procs.new_mark(), procs.new_mark()
    try:
        async with trio.open_nursery() as nursery:
            other_step = shell("setsid -f sleep 3005; sleep 3006", other)
            nursery.start_soon(executor.run, other_step, ctx("b"))
            await wait_for(other, 3)  # sh, sleep 3005 (its own session), sleep 3006
            result = await executor.run(shell("setsid -f sleep 3005", mine), ctx("a"))
            assert result.ok
            assert procs.wait_gone(mine, 2.0) == []
            assert len(procs.live_processes(other)) == 3
            nursery.cancel_scope.cancel()
        assert procs.wait_gone(other, 2.0) == []
    finally:
        for pid in procs.live_processes(mine) + procs.live_processes(other):
            os.kill(pid, 9)


async def test_dagds_other_children_keep_their_exit_status(
    executor: LocalExecutor, mark: str
) -> None:
    """The subreaper reaps orphans only: a process dagd's own code started (as a Python step
    may) is never reaped behind its back, so its exit status stays its owner's."""
    own = subprocess.Popen(["sh", "-c", "exit 7"])  # a child of this thread
    time.sleep(0.1)  # it is a zombie now, waiting for its owner
    result = await executor.run(shell("setsid -f sleep 3005; true", mark), ctx())
    assert result.ok
    assert own.wait(timeout=5) == 7
    assert procs.wait_gone(mark, 2.0) == []


async def test_kill_now_cuts_the_grace_period_short(tmp_path: Path, mark: str) -> None:
    """A second signal at shutdown: steps that ignore SIGTERM are SIGKILLed at once, not
    after the grace period, and what escaped their group goes too."""
    executor = LocalExecutor(log_dir=tmp_path / "logs", grace=60.0)
    stubborn = "trap '' TERM; setsid -f sleep 3005; sleep 3006"
    step_scope = trio.CancelScope()
    ended = trio.Event()

    async def step() -> None:
        with step_scope:
            await executor.run(shell(stubborn, mark), ctx())
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(step)
        await wait_for(mark, 3)
        step_scope.cancel()  # the attempt now waits up to 60 s after SIGTERM
        await trio.sleep(0.3)
        assert not ended.is_set()
        assert len(procs.live_processes(mark)) == 3  # the group ignored SIGTERM
        started = trio.current_time()
        executor.kill_now()
        with trio.fail_after(5):
            await ended.wait()
    assert trio.current_time() - started < 5
    assert procs.wait_gone(mark, 2.0) == []


@pytest.mark.parametrize(
    "command",
    ["setsid -f true; sleep 0.3", "( (setsid true &) &); sleep 0.3", "setsid -f sh -c 'true &'"],
)
async def test_escapees_that_exit_on_their_own_are_reaped(
    executor: LocalExecutor, mark: str, command: str
) -> None:
    """An escaped process that ends before its step comes back to dagd as a zombie, whose
    environment can no longer be read: it is reaped all the same (none piles up)."""
    zombies = set(zombie_children())
    for attempt in (1, 2, 3):
        result = await executor.run(shell(command, mark), ctx(attempt=attempt))
        assert result.ok, result.error
    assert set(zombie_children()) - zombies == set()
