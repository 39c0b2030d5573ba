"""The step-log layout: where writers put an attempt's output and how `dagd logs` finds it."""

from __future__ import annotations

from pathlib import Path

from dagd.runtime.logfiles import attempt_log, step_logs


def test_attempt_log_layout(tmp_path: Path) -> None:
    assert attempt_log(tmp_path, "etl", "run1", "load", 3, "err") == (
        tmp_path / "etl" / "run1" / "load.3.err"
    )


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_step_logs_by_attempt_stdout_first(tmp_path: Path) -> None:
    err1 = touch(attempt_log(tmp_path, "etl", "run1", "load", 1, "err"))
    out1 = touch(attempt_log(tmp_path, "etl", "run1", "load", 1, "out"))
    out2 = touch(attempt_log(tmp_path, "etl", "run1", "load", 2, "out"))
    touch(attempt_log(tmp_path, "etl", "run1", "load.more", 1, "out"))  # a step id with a dot
    touch(attempt_log(tmp_path, "etl", "run2", "load", 1, "out"))  # another run
    assert step_logs(tmp_path, "run1", "load") == {1: [out1, err1], 2: [out2]}


def test_glob_characters_in_ids_are_literal(tmp_path: Path) -> None:
    odd = touch(attempt_log(tmp_path, "d", "run[1]*?", "st[e]p*", 1, "out"))
    touch(attempt_log(tmp_path, "d", "run1", "step", 1, "out"))  # what a glob would match
    assert step_logs(tmp_path, "run[1]*?", "st[e]p*") == {1: [odd]}
    assert step_logs(tmp_path, "run?", "step") == {}


def test_no_log_folder(tmp_path: Path) -> None:
    assert step_logs(tmp_path / "missing", "run1", "load") == {}
