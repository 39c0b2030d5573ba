"""Outputs between steps with real processes (dagd.runtime.engine.run_dag, LocalExecutor):
$DAGD_OUTPUT lines and heredocs, Python mappings, what downstream steps receive, and the
errors of outputs that cannot be taken."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from dagd.core.events import StepStatusEvent
from dagd.core.model import RunStatus, StepStatus
from dagd.core.outputs import MAX_RUN_OUTPUT_BYTES
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.runtime.engine import run_dag
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.local.outputfiles import OutputFiles, shared_folder

S = StepStatus


async def run(toml: str, log_dir: Path | None = None) -> tuple[RunStatus, RunState, list[Any]]:
    dag = parse_dag(textwrap.dedent(toml), "t.toml", "t")
    state = RunState(dag, "manual__t")
    events: list[Any] = []
    status = await run_dag(state, LocalExecutor(log_dir=log_dir), events.append)
    return status, state, events


def final(events: list[Any], step_id: str) -> StepStatusEvent:
    found = [e for e in events if isinstance(e, StepStatusEvent) and e.step_id == step_id]
    return found[-1]


async def test_shell_lines_and_heredocs_reach_downstream_env_never_the_shell_text(
    tmp_path: Path,
) -> None:
    status, state, events = await run(
        r"""
        [steps.make]
        command = '''
        echo "count=3" >> "$DAGD_OUTPUT"
        echo 'tricky=$(touch pwned); `x` "q"' >> "$DAGD_OUTPUT"
        printf 'report<<END\nline one\n\nline=three\nEND\n' >> "$DAGD_OUTPUT"
        '''
        [steps.use]
        command = '''
        env | grep ^DAGD_OUTPUT_ | sort
        printf "%s" "$DAGD_OUTPUT_MAKE_REPORT" > report.txt
        eval "echo $DAGD_OUTPUT_MAKE_COUNT" > /dev/null
        '''
        cwd = "TMP"
        depends_on = ["make"]
        """.replace("TMP", str(tmp_path)),
        log_dir=tmp_path / "logs",
    )
    assert status is RunStatus.SUCCESS
    outputs = {
        "count": "3",
        "tricky": '$(touch pwned); `x` "q"',
        "report": "line one\n\nline=three",
    }
    assert final(events, "make").outputs == outputs
    assert state.steps["make"].outputs == outputs
    assert (tmp_path / "report.txt").read_text() == "line one\n\nline=three"
    assert not (tmp_path / "pwned").exists()
    log = (tmp_path / "logs/t/manual__t/use.1.out").read_text()
    assert "DAGD_OUTPUT_MAKE_COUNT=3\n" in log
    assert 'DAGD_OUTPUT_MAKE_TRICKY=$(touch pwned); `x` "q"\n' in log
    assert final(events, "use").outputs is None  # it wrote none


async def test_python_mappings_and_transitive_upstreams_in_env_and_context() -> None:
    status, _, events = await run(
        """
        [steps.py]
        call = "outputfuncs:give"
        [steps.aio]
        call = "outputfuncs:give_async"
        [steps.sh]
        command = '''
        echo "n=$DAGD_OUTPUT_PY_COUNT" >> $DAGD_OUTPUT
        echo "j=$DAGD_OUTPUT_PY_ITEMS" >> $DAGD_OUTPUT
        echo "b=$DAGD_OUTPUT_PY_OK/$DAGD_OUTPUT_PY_NONE" >> $DAGD_OUTPUT
        '''
        depends_on = ["py"]
        [steps.last]
        call = "outputfuncs:seen"
        depends_on = ["sh", "aio"]
        """
    )
    assert status is RunStatus.SUCCESS
    given = {"count": 3, "label": "a b", "items": [1, "x"], "ok": True, "none": None}
    assert final(events, "py").outputs == given
    # Non-strings reach the environment as compact JSON.
    assert final(events, "sh").outputs == {"n": "3", "j": '[1,"x"]', "b": "true/null"}
    # A Python step gets every upstream's outputs, transitively (py through sh), as given.
    seen = json.loads(final(events, "last").outputs["seen"])  # type: ignore[index]
    assert seen == {
        "aio": {"where": "loop"},
        "py": given,
        "sh": {"n": "3", "j": '[1,"x"]', "b": "true/null"},
    }


async def test_outputs_that_cannot_be_taken_fail_the_step_naming_it_and_the_key() -> None:
    big = "x" * 70_000
    status, _, events = await run(
        f"""
        [steps.shell_bad_key]
        command = 'echo "bad-key=1" >> "$DAGD_OUTPUT"'
        [steps.shell_too_big]
        command = 'printf "blob=%s" {big} >> "$DAGD_OUTPUT"'
        [steps.py_bad_key]
        call = "outputfuncs:bad_key"
        [steps.py_too_big]
        call = "outputfuncs:too_big"
        [steps.py_number]
        call = "outputfuncs:returns_a_number"
        [steps.after]
        command = "true"
        depends_on = ["shell_bad_key"]
        """
    )
    assert status is RunStatus.FAILED
    errors = {sid: final(events, sid).error for sid in state_ids(events)}
    assert errors["shell_bad_key"] == (
        "outputs of step 'shell_bad_key': line 1: key 'bad-key' is not a valid output name "
        "(a letter or _, then letters, digits and _, at most 64)"
    )
    assert errors["shell_too_big"] == (
        "outputs of step 'shell_too_big': the output file holds 70005 bytes, over the limit "
        "of 65536"
    )
    assert errors["py_bad_key"] is not None and errors["py_bad_key"].startswith(
        "outputs of step 'py_bad_key': key 'not-fine' is not a valid output name"
    )
    assert errors["py_too_big"] == (
        "outputs of step 'py_too_big': the outputs take 70011 bytes as JSON, over the limit "
        "of 65536"
    )
    assert errors["py_number"] == (
        "outputs of step 'py_number': a Python step returns a mapping of outputs or None, not int"
    )
    assert final(events, "after").status is S.UPSTREAM_FAILED
    assert all(final(events, sid).outputs is None for sid in errors)


def state_ids(events: list[Any]) -> list[str]:
    return list(dict.fromkeys(e.step_id for e in events if isinstance(e, StepStatusEvent)))


async def test_a_run_s_outputs_together_are_bounded() -> None:
    # 18 steps of 60,011 bytes each (as JSON): 17 fit in MAX_RUN_OUTPUT_BYTES, one does not.
    steps = "".join(
        f"""
        [steps.s{i}]
        command = 'printf "blob=%s" {"x" * 60_000} >> "$DAGD_OUTPUT"'
        """
        for i in range(18)
    )
    status, state, events = await run(steps)
    assert status is RunStatus.FAILED
    failed = [sid for sid, st in state.steps.items() if st.status is S.FAILED]
    assert len(failed) == 1
    assert final(events, failed[0]).error == (
        f"outputs of step {failed[0]!r}: the run's outputs would take 1080198 bytes together, "
        "over the limit of 1048576 per run"
    )
    assert state.steps[failed[0]].outputs is None
    assert state.output_bytes == 17 * 60_011 <= MAX_RUN_OUTPUT_BYTES


async def test_two_upstream_outputs_as_one_variable_fail_the_step_that_would_get_both() -> None:
    status, _, events = await run(
        """
        [steps.a_b]
        command = 'echo c=1 >> "$DAGD_OUTPUT"'
        [steps.a-b]
        command = 'echo c=2 >> "$DAGD_OUTPUT"'
        [steps.both]
        command = "true"
        depends_on = ["a_b", "a-b"]
        """
    )
    assert status is RunStatus.FAILED
    assert final(events, "both").error == (
        "cannot start the command: outputs a_b.c and a-b.c would both be DAGD_OUTPUT_A_B_C: "
        "rename one"
    )


async def test_a_failed_attempt_gives_no_outputs_and_its_file_is_removed(tmp_path: Path) -> None:
    marker = tmp_path / "path"
    status, _, events = await run(
        f"""
        [steps.a]
        command = '''
        echo "x=1" >> "$DAGD_OUTPUT"
        echo "$DAGD_OUTPUT $(stat -c %a "$(dirname "$DAGD_OUTPUT")")" > {marker}
        exit 3
        '''
        """
    )
    assert status is RunStatus.FAILED
    assert final(events, "a").outputs is None
    where, mode = marker.read_text().split()
    assert mode == "700"  # the executor's private folder
    assert not Path(where).exists()
    # One folder per user, kept (a killed dagd leaves none behind); names per process.
    assert Path(where).parent.name == f"dagd-outputs-{os.getuid()}"
    assert Path(where).name.startswith(f"{os.getpid()}-")


def test_a_killed_process_s_output_files_are_removed_by_the_next_one() -> None:
    folder = shared_folder()
    assert folder is not None
    dead = subprocess.Popen(["true"])  # a pid that no longer runs
    dead.wait()
    orphan = Path(folder) / f"{dead.pid}-7"
    orphan.write_text("x=1\n")
    alive = Path(folder) / f"{os.getppid()}-3"  # a live process's file is kept
    alive.write_text("y=2\n")
    try:
        OutputFiles().next_path()
        assert not orphan.exists()
        assert alive.exists()
    finally:
        alive.unlink(missing_ok=True)
        orphan.unlink(missing_ok=True)


def test_a_folder_under_the_fixed_name_that_is_not_ours_alone_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"dagd-outputs-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(tmp_path / f"dagd-outputs-{os.getuid()}", 0o777)  # (umask)
    assert shared_folder() is None
    files = OutputFiles()
    path = Path(files.next_path())
    assert path.parent.parent == tmp_path and path.parent.name != f"dagd-outputs-{os.getuid()}"
    assert path.parent.stat().st_mode & 0o777 == 0o700  # a folder of this process's own ...
    del files
    gc.collect()
    assert not path.parent.exists()  # ... removed with its executor


async def test_a_fifo_as_output_file_fails_the_step_at_once_and_is_removed(
    tmp_path: Path,
) -> None:
    # Opening a fifo to read blocks until a writer comes: that would hang the attempt's
    # thread, and with it its timeout and every cancel.
    marker = tmp_path / "path"
    with trio.fail_after(20):
        status, _, events = await run(f"""
            [steps.f]
            command = 'mkfifo "$DAGD_OUTPUT"; echo "$DAGD_OUTPUT" > {marker}'
            timeout = "30s"
            """)
    assert status is RunStatus.FAILED
    assert final(events, "f").error == "outputs of step 'f': $DAGD_OUTPUT is not a regular file"
    assert not Path(marker.read_text().strip()).exists()


async def test_a_step_without_outputs_creates_no_file(tmp_path: Path) -> None:
    marker = tmp_path / "path"
    status, _, _ = await run(f"""
        [steps.a]
        command = 'echo "$DAGD_OUTPUT" > {marker}; test ! -e "$DAGD_OUTPUT"'
        """)
    assert status is RunStatus.SUCCESS
    assert marker.read_text().strip()


async def test_the_bundled_report_dag_passes_its_data_through_outputs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    dag = parse_dag((root / "dags/report.toml").read_bytes(), "dags/report.toml", "report")
    events: list[Any] = []
    state = RunState(dag, "manual__r", dag.bind_params({"sample_size": 200}))
    status = await run_dag(state, LocalExecutor(log_dir=tmp_path), events.append)
    assert status is RunStatus.SUCCESS
    values = final(events, "fetch").outputs["values"]  # type: ignore[index]
    assert len(values) == 200
    summary = final(events, "summarise").outputs
    assert summary is not None and 80 <= summary["mean"] <= 120 and summary["stdev"] > 0
    assert final(events, "alert").status is S.SKIPPED
    assert not list(tmp_path.glob("**/*.json"))  # nothing passed through files
