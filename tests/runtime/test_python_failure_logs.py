"""A Python step's failure reaches its stderr log file: the traceback from the step's own code
(dagd's and trio's frames left out), or why its callable could not be found. An attempt that
succeeds without logging makes no file."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from dagd.core.model import StepSpec
from dagd.runtime.executor import StepContext
from dagd.runtime.local.executor import LocalExecutor


def ctx(step_id: str = "s", attempt: int = 1) -> StepContext:
    return StepContext("dag1", "run1", step_id, attempt, {})


def err_log(root: Path, step_id: str = "s", attempt: int = 1) -> Path:
    return root / "dag1" / "run1" / f"{step_id}.{attempt}.err"


@pytest.fixture
def steps_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of failing steps on sys.path; returns its name."""
    name = "failing_steps_for_logs"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """\
            def parse(text):
                return int(text)

            def chained(ctx):
                try:
                    parse("not a number")
                except ValueError as exc:
                    raise RuntimeError("could not read the input") from exc

            async def logs_then_fails(ctx):
                ctx.log("half way")
                raise KeyError("missing \\u00e9\\x00")

            class Broken(Exception):
                def __str__(self):
                    raise TypeError("no text")

            def broken_message(ctx):
                raise Broken()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(
    ("call", "last_line", "raising_line"),
    [
        ("stepfuncs:raise_value_error", "ValueError: bad value in s", "raise_value_error"),
        (
            "stepfuncs:async_raise_runtime_error",
            "RuntimeError: async boom",
            "async_raise_runtime_error",
        ),
    ],
)
async def test_traceback_starts_at_the_step(
    tmp_path: Path, call: str, last_line: str, raising_line: str
) -> None:
    logs = tmp_path / "logs"
    result = await LocalExecutor(log_dir=logs).run(StepSpec("s", call=call), ctx())
    assert not result.ok
    lines = err_log(logs).read_text().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "stepfuncs.py" in lines[1] and lines[1].endswith(f", in {raising_line}")
    assert lines[-1] == last_line
    text = "\n".join(lines)
    assert "dagd/runtime" not in text and "/trio/" not in text and "outcome" not in text


async def test_chained_exceptions_are_kept_whole(tmp_path: Path, steps_module: str) -> None:
    logs = tmp_path / "logs"
    step = StepSpec("s", call=f"{steps_module}:chained")
    result = await LocalExecutor(log_dir=logs).run(step, ctx())
    assert result.error == "RuntimeError: could not read the input"
    text = err_log(logs).read_text()
    assert "ValueError: invalid literal for int() with base 10: 'not a number'" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert "return int(text)" in text  # the frames under the step's own function
    assert text.endswith("RuntimeError: could not read the input\n")


async def test_step_log_and_traceback_go_to_their_own_streams(
    tmp_path: Path, steps_module: str
) -> None:
    logs = tmp_path / "logs"
    step = StepSpec("s", call=f"{steps_module}:logs_then_fails")
    await LocalExecutor(log_dir=logs).run(step, ctx(attempt=2))
    assert (logs / "dag1" / "run1" / "s.2.out").read_text() == "half way\n"
    text = err_log(logs, attempt=2).read_text()
    assert text.endswith("KeyError: 'missing \u00e9\\x00'\n")
    assert not err_log(logs, attempt=1).exists()


async def test_a_message_that_cannot_be_shown(tmp_path: Path, steps_module: str) -> None:
    logs = tmp_path / "logs"
    step = StepSpec("s", call=f"{steps_module}:broken_message")
    result = await LocalExecutor(log_dir=logs).run(step, ctx())
    assert result.error == "Broken: <Broken whose message cannot be shown>"
    assert "Broken" in err_log(logs).read_text()


async def test_callable_not_found_is_logged(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    step = StepSpec("s", call="stepfuncs:no_such_function")
    result = await LocalExecutor(log_dir=logs).run(step, ctx())
    assert result.error == "module 'stepfuncs' has no attribute 'no_such_function'"
    assert err_log(logs).read_text() == (
        "dagd: cannot call 'stepfuncs:no_such_function': "
        "module 'stepfuncs' has no attribute 'no_such_function'\n"
    )


@pytest.mark.parametrize("call", ["stepfuncs:noop", "stepfuncs:sync_noop"])
async def test_success_touches_no_file(tmp_path: Path, call: str) -> None:
    logs = tmp_path / "logs"
    result = await LocalExecutor(log_dir=logs).run(StepSpec("s", call=call), ctx())
    assert result.ok
    assert not logs.exists()


async def test_without_logs_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    step = StepSpec("s", call="stepfuncs:raise_value_error")
    result = await LocalExecutor(log_dir=None).run(step, ctx())
    assert result.error == "ValueError: bad value in s"
    assert list(tmp_path.iterdir()) == []


async def test_unwritable_log_folder_keeps_the_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.write_text("a file where the log folder should be")
    step = StepSpec("s", call="stepfuncs:raise_value_error")
    with caplog.at_level(logging.WARNING, logger="dagd.runtime.local.python"):
        result = await LocalExecutor(log_dir=logs).run(step, ctx())
    assert result.error == "ValueError: bad value in s"
    assert "cannot write the traceback of a failed step" in caplog.text
