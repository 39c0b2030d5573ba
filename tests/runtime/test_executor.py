"""The local executor: one attempt of one step, with real subprocesses and real log files.

Process checks read /proc for a marker (DAGD_TEST_MARK) in the environment, so they see every
descendant of a step, not only the process the executor started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import proctools as procs
import pytest
import trio
import trio.testing

from dagd.core.model import StepSpec
from dagd.runtime.executor import LeftoverHandle, StepContext
from dagd.runtime.local.environment import step_environment
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.local.procs import boot_id, process_start
from dagd.runtime.local.python import resolve_callable

GRACE = 0.3
TIMEOUT = 0.3


def ctx(run_id: str = "run1", step_id: str = "s", attempt: int = 1, **params: str) -> StepContext:
    return StepContext("dag1", run_id, step_id, attempt, params)


def shell(command: str | tuple[str, ...], mark: str | None = None, **kw: object) -> StepSpec:
    env = {procs.MARK_VAR: mark} if mark else {}
    return StepSpec("s", command=command, env=env, **kw)  # type: ignore[arg-type]


async def wait_for_processes(mark: str, count: int, timeout: float = 5.0) -> None:
    """Wait (real time) until at least `count` live processes carry `mark`."""
    with trio.fail_after(timeout):
        while len(procs.live_processes(mark)) < count:
            await trio.sleep(0.01)


@pytest.fixture
def executor(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(log_dir=tmp_path / "logs", grace=GRACE)


class Handles(list[LeftoverHandle]):
    """Records the leftover handles an attempt reports (an `on_leftover` sink)."""

    def __call__(self, ctx: StepContext, handle: LeftoverHandle) -> None:
        self.append(handle)


# ---------------------------------------------------------------- killing whole process groups


async def test_timeout_kills_grandchildren(executor: LocalExecutor) -> None:
    mark = procs.new_mark()
    # 1 s rather than TIMEOUT: the watcher must see all three processes before the timeout hits,
    # even on a loaded machine.
    step = shell("sleep 600 & sleep 600", mark, timeout=1)
    seen: list[int] = []

    async def watch() -> None:
        await wait_for_processes(mark, 3)  # sh + both sleeps: the grandchild really exists
        seen.extend(procs.live_processes(mark))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        result = await executor.run(step, ctx())
    assert len(seen) == 3
    assert not result.ok
    assert result.timed_out
    assert result.error == "timed out after 1s"
    assert procs.wait_gone(mark) == []


async def test_cancel_kills_grandchildren(executor: LocalExecutor) -> None:
    mark = procs.new_mark()
    step = shell("sleep 600 & sleep 600", mark)  # no timeout: only the cancel stops it
    result = None
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal result
            result = await executor.run(step, ctx())

        nursery.start_soon(run)
        await wait_for_processes(mark, 3)
        nursery.cancel_scope.cancel()
    assert result is None  # cancellation propagates out of LocalExecutor.run
    assert procs.wait_gone(mark) == []


async def test_term_ignoring_step_is_killed_after_grace(executor: LocalExecutor) -> None:
    mark = procs.new_mark()
    # An ignored SIGTERM is inherited across exec, so the sleep ignores it too.
    step = shell("trap '' TERM; sleep 600", mark, timeout=TIMEOUT)
    t0 = time.monotonic()
    result = await executor.run(step, ctx())
    elapsed = time.monotonic() - t0
    assert result.error == "timed out after 0.3s"
    assert result.timed_out
    assert elapsed >= TIMEOUT + GRACE - 0.05  # SIGTERM did nothing; SIGKILL came after grace
    assert elapsed < TIMEOUT + GRACE + 3
    assert procs.wait_gone(mark) == []


async def test_cancel_of_term_ignoring_step_escalates_to_sigkill(executor: LocalExecutor) -> None:
    mark = procs.new_mark()
    step = shell("trap '' TERM; sleep 600 & sleep 600", mark)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor.run, step, ctx())
        await wait_for_processes(mark, 3)
        t0 = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - t0 >= GRACE - 0.05
    assert procs.wait_gone(mark) == []


async def test_leftovers_of_a_finished_step_are_killed(executor: LocalExecutor) -> None:
    mark = procs.new_mark()
    result = await executor.run(shell("sleep 600 & echo started", mark), ctx())
    assert result.ok
    assert procs.wait_gone(mark) == []


async def test_step_runs_in_its_own_process_group(executor: LocalExecutor) -> None:
    handles = Handles()
    result = await executor.run(shell("cut -d' ' -f5 /proc/$$/stat >&2; exit 1"), ctx(), handles)
    assert len(handles) == 1
    pgid = handles[0]["pgid"]
    assert pgid != os.getpgrp()
    assert result.error == f"exit code 1: {pgid}"  # the shell's process group is its pid


# ------------------------------------------------------------------------------ error texts


async def test_exit_code_and_last_stderr_line(executor: LocalExecutor, tmp_path: Path) -> None:
    result = await executor.run(shell("echo first >&2; echo oops >&2; echo out; exit 3"), ctx())
    assert not result.ok
    assert not result.timed_out
    assert result.error == "exit code 3: oops"
    folder = tmp_path / "logs" / "dag1" / "run1"
    assert (folder / "s.1.out").read_text() == "out\n"
    assert (folder / "s.1.err").read_text() == "first\noops\n"


async def test_exit_code_without_logs_has_no_stderr_line() -> None:
    result = await LocalExecutor(log_dir=None).run(shell("echo oops >&2; exit 3"), ctx())
    assert result.error == "exit code 3"


async def test_killed_by_signal(executor: LocalExecutor) -> None:
    result = await executor.run(shell("kill -KILL $$"), ctx())
    assert result.error == "killed by SIGKILL"
    result = await executor.run(shell("echo dying >&2; kill -TERM $$"), ctx())
    assert result.error == "killed by SIGTERM: dying"


async def test_missing_executable_in_argv_form(executor: LocalExecutor) -> None:
    handles = Handles()
    result = await executor.run(shell(("/nonexistent/dagd-no-such-program", "x")), ctx(), handles)
    assert not result.ok
    assert handles == []  # nothing was spawned
    assert result.error == (
        "cannot start '/nonexistent/dagd-no-such-program': No such file or directory"
    )


async def test_missing_command_in_shell_form(executor: LocalExecutor) -> None:
    result = await executor.run(shell("dagd-no-such-program-xyz"), ctx())
    assert result.error is not None
    assert result.error.startswith("exit code 127: ")
    assert "dagd-no-such-program-xyz" in result.error


async def test_callable_raising(executor: LocalExecutor) -> None:
    sync = await executor.run(StepSpec("s", call="stepfuncs:raise_value_error"), ctx())
    assert sync.error == "ValueError: bad value in s"
    asyn = await executor.run(StepSpec("s", call="stepfuncs:async_raise_runtime_error"), ctx())
    assert asyn.error == "RuntimeError: async boom"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "dagd_no_such_module_xyz:func",
            "cannot import module 'dagd_no_such_module_xyz': "
            "No module named 'dagd_no_such_module_xyz'",
        ),
        ("stepfuncs:no_such_function", "module 'stepfuncs' has no attribute 'no_such_function'"),
        ("stepfuncs:not_callable", "'stepfuncs:not_callable' is not callable"),
    ],
)
async def test_callable_that_cannot_be_resolved(
    executor: LocalExecutor, target: str, message: str
) -> None:
    result = await executor.run(StepSpec("s", call=target), ctx())
    assert not result.ok
    assert result.error == message


def test_resolve_callable_is_cached() -> None:
    assert resolve_callable("stepfuncs:noop") is resolve_callable("stepfuncs:noop")


async def test_callable_success_and_log(executor: LocalExecutor, tmp_path: Path) -> None:
    result = await executor.run(StepSpec("s", call="stepfuncs:write_log"), ctx(attempt=2))
    assert result.ok
    assert result.error is None
    log = tmp_path / "logs" / "dag1" / "run1" / "s.2.out"
    assert log.read_text() == "hello from s attempt 2\n"


async def test_async_callable_timeout(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    result = await LocalExecutor().run(
        StepSpec("s", call="stepfuncs:sleep_forever", timeout=90), ctx()
    )
    assert result.timed_out
    assert result.error == "timed out after 90s"
    assert trio.current_time() - t0 == 90


# ---------------------------------------------------------------------- environment, cwd, argv


async def test_params_and_dagd_variables_reach_the_environment(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    evil = "$(touch pwned); rm -rf x `touch pwned2` && echo gotcha"
    work = tmp_path / "work"
    work.mkdir()
    (work / "x").write_text("keep me")
    step = StepSpec(
        "show",
        command='printf "%s\\n" "$DAGD_PARAM_GREETING" "$DAGD_PARAM_EVIL" "$DAGD_DAG_ID" '
        '"$DAGD_RUN_ID" "$DAGD_STEP_ID" "$DAGD_ATTEMPT"',
        cwd=str(work),
    )
    result = await executor.run(
        step, ctx(run_id="r-42", step_id="show", attempt=3, greeting="hi there", evil=evil)
    )
    assert result.ok, result.error
    out = (tmp_path / "logs" / "dag1" / "r-42" / "show.3.out").read_text()
    assert out.splitlines() == ["hi there", evil, "dag1", "r-42", "show", "3"]
    assert (work / "x").read_text() == "keep me"
    assert sorted(p.name for p in work.iterdir()) == ["x"]  # no pwned, pwned2


def test_step_environment_order() -> None:
    step = StepSpec("s", command="true", env={"FOO": "step", "DAGD_STEP_ID": "spoofed"})
    env = step_environment(step, ctx(name="v"), base={"FOO": "base", "KEEP": "1"})
    assert env == {
        "FOO": "step",
        "KEEP": "1",
        "DAGD_DAG_ID": "dag1",
        "DAGD_RUN_ID": "run1",
        "DAGD_STEP_ID": "s",
        "DAGD_ATTEMPT": "1",
        "DAGD_PARAM_NAME": "v",
    }


async def test_step_env_and_base_env(tmp_path: Path) -> None:
    ex = LocalExecutor(log_dir=tmp_path, base_env={"PATH": os.environ["PATH"], "FROM_BASE": "b"})
    step = StepSpec(
        "s", command='echo "$FROM_BASE $FROM_STEP ${HOME-unset}"', env={"FROM_STEP": "s"}
    )
    assert (await ex.run(step, ctx())).ok
    assert (tmp_path / "dag1" / "run1" / "s.1.out").read_text() == "b s unset\n"


async def test_cwd(executor: LocalExecutor, tmp_path: Path) -> None:
    work = tmp_path / "somewhere"
    work.mkdir()
    assert (await executor.run(shell("pwd", cwd=str(work)), ctx())).ok
    out = (tmp_path / "logs" / "dag1" / "run1" / "s.1.out").read_text().strip()
    assert os.path.realpath(out) == os.path.realpath(work)


async def test_argv_list_runs_without_a_shell(executor: LocalExecutor, tmp_path: Path) -> None:
    argv = ("printf", "%s|%s\\n", "$HOME; touch pwned", "$(echo no)")
    result = await executor.run(shell(argv, cwd=str(tmp_path)), ctx())
    assert result.ok, result.error
    out = (tmp_path / "logs" / "dag1" / "run1" / "s.1.out").read_text()
    assert out == "$HOME; touch pwned|$(echo no)\n"
    assert not (tmp_path / "pwned").exists()


async def test_attempts_get_separate_log_files(executor: LocalExecutor, tmp_path: Path) -> None:
    for attempt in (1, 2):
        await executor.run(shell('echo "attempt $DAGD_ATTEMPT"'), ctx(attempt=attempt))
    folder = tmp_path / "logs" / "dag1" / "run1"
    assert (folder / "s.1.out").read_text() == "attempt 1\n"
    assert (folder / "s.2.out").read_text() == "attempt 2\n"


async def test_stdin_is_closed(executor: LocalExecutor) -> None:
    # A step reading stdin must see EOF at once instead of hanging on the daemon's terminal.
    result = await executor.run(shell("cat; exit 5", timeout=5), ctx())
    assert result.error == "exit code 5"


async def test_log_folder_is_recreated_when_removed(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    folder = tmp_path / "logs" / "dag1" / "run1"
    assert (await executor.run(shell("echo one"), ctx(attempt=1))).ok
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    assert (await executor.run(shell("echo two"), ctx(attempt=2))).ok
    assert (folder / "s.2.out").read_text() == "two\n"


# ------------------------------------------------- output copied through pipes (dagd/shellrun.py)


async def test_no_output_creates_no_log_files(executor: LocalExecutor, tmp_path: Path) -> None:
    assert (await executor.run(shell("true"), ctx())).ok
    assert not (tmp_path / "logs" / "dag1" / "run1").exists()
    assert (await executor.run(shell("echo only-out"), ctx(attempt=2))).ok
    folder = tmp_path / "logs" / "dag1" / "run1"
    assert sorted(p.name for p in folder.iterdir()) == ["s.2.out"]


async def test_output_is_copied_whole(executor: LocalExecutor, tmp_path: Path) -> None:
    # More than a pipe holds (64 KiB) on both streams at once, interleaved: nothing may block
    # or be lost.
    script = "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2; echo end >&2"
    assert (await executor.run(shell(script, timeout=30), ctx())).ok
    folder = tmp_path / "logs" / "dag1" / "run1"
    assert (folder / "s.1.out").stat().st_size == 3_000_000
    assert (folder / "s.1.err").stat().st_size == 2_000_004


async def test_log_is_written_while_the_step_runs(executor: LocalExecutor, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "dag1" / "run1" / "s.1.out"
    step = shell(f"echo started; while [ ! -e {tmp_path}/go ]; do sleep 0.01; done; echo done")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor.run, step, ctx())
        with trio.fail_after(5):
            while not (log.exists() and log.read_text() == "started\n"):
                await trio.sleep(0.01)
        (tmp_path / "go").touch()
    assert log.read_text() == "started\ndone\n"


async def test_step_that_closes_its_output_keeps_running(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    # End of both pipes is not the end of the step: only its first process exiting is.
    done = tmp_path / "done"
    result = await executor.run(shell(f"exec >&- 2>&-; sleep 0.3; touch {done}"), ctx())
    assert result.ok, result.error
    assert done.exists()


async def test_background_child_holding_the_pipes_does_not_delay_the_end(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    mark = procs.new_mark()
    t0 = time.monotonic()
    result = await executor.run(shell("sleep 600 & echo parent; exit 4", mark), ctx())
    assert time.monotonic() - t0 < 5
    assert result.error == "exit code 4"
    assert (tmp_path / "logs" / "dag1" / "run1" / "s.1.out").read_text() == "parent\n"
    assert procs.wait_gone(mark) == []


async def test_unwritable_log_keeps_the_steps_result(tmp_path: Path) -> None:
    # The log folder cannot be made (a file stands where a folder should be): the step has
    # run, so its own result stands, and a failure's message says the output was lost.
    (tmp_path / "logs").write_text("not a folder")
    ex = LocalExecutor(log_dir=tmp_path / "logs", grace=GRACE)
    assert (await ex.run(shell("echo fine"), ctx())).ok
    result = await ex.run(shell("echo why >&2; exit 2"), ctx())
    assert result.error is not None
    assert result.error.startswith("exit code 2: why (output lost, cannot write ")
    assert "s.1.err" in result.error


async def test_process_group_is_recorded_while_the_step_runs(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    handles = Handles()
    step = shell(f"while [ ! -e {tmp_path}/go ]; do sleep 0.01; done")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor.run, step, ctx(), handles)
        with trio.fail_after(5):
            while not handles:
                await trio.sleep(0.01)
        pgid = handles[0]["pgid"]
        assert os.getpgid(pgid) == pgid  # alive, and the leader of its own group
        # what recovery needs to tell it from a stranger that reuses the pid later
        assert handles[0] == {
            "executor": "local",
            "pgid": pgid,
            "start_ticks": process_start(pgid),
            "boot_id": boot_id(),
        }
        assert isinstance(handles[0]["start_ticks"], int)
        (tmp_path / "go").touch()


async def test_missing_working_directory(executor: LocalExecutor, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    handles = Handles()
    result = await executor.run(shell("true", cwd=missing), ctx(), handles)
    assert (result.ok, handles) == (False, [])
    assert result.error == f"working directory {missing!r} does not exist"


async def test_nul_byte_in_a_param_is_refused_before_anything_runs(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    handles = Handles()
    result = await executor.run(shell(f"touch {tmp_path}/ran"), ctx(date="2024\x0001"), handles)
    assert (result.ok, handles) == (False, [])
    assert result.error is not None
    assert result.error.startswith("cannot start the command: ")
    assert "null byte" in result.error
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("case", ["output", "closes its output", "background child"])
async def test_without_pidfd_the_thread_looks_for_the_exit_itself(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # As on Linux before 5.3 (RHEL 8's 4.18) or under a seccomp filter.
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    mark = procs.new_mark()
    command = {
        "output": "echo out; echo err >&2; exit 3",
        "closes its output": f"exec >&- 2>&-; sleep 0.2; touch {tmp_path}/done; exit 3",
        "background child": "sleep 600 & echo out; echo err >&2; exit 3",
    }[case]
    t0 = time.monotonic()
    result = await executor.run(shell(command, mark, timeout=10), ctx())
    assert time.monotonic() - t0 < 5
    assert result.error == ("exit code 3" if case == "closes its output" else "exit code 3: err")
    if case == "closes its output":
        assert (tmp_path / "done").exists()
    else:
        assert (tmp_path / "logs" / "dag1" / "run1" / "s.1.out").read_text() == "out\n"
    assert procs.wait_gone(mark) == []
