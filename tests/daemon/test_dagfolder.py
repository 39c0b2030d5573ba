"""The DAG folder alone: one loader, one rule for duplicate ids, incremental reloads."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import pytest
from daemonhelp import write_dag_file

from dagd.daemon.dagfolder import DagFolder, load_dag_folder

GOOD = '[steps.s]\ncommand = "true"\n'


def write(folder: Path, name: str, text: str) -> Path:
    """Write <folder>/<name>.toml so that a reload sees a change even within one mtime tick."""
    return write_dag_file(folder, name, textwrap.dedent(text))


def test_good_and_broken_files_each_reported_by_file(tmp_path: Path) -> None:
    write(tmp_path, "one", GOOD)
    bad = write(tmp_path, "bad", "this is = not toml [")
    (tmp_path / "notes.txt").write_text("not a DAG file")
    folder = load_dag_folder(tmp_path)
    assert set(folder.dags) == {"one"}
    assert folder.dags["one"].source == str(tmp_path / "one.toml")
    assert list(folder.problems) == [str(bad)]
    assert "not valid TOML" in str(folder.problems[str(bad)][0])
    assert not folder.ok


def test_a_missing_folder_is_a_problem_for_the_cli_and_empty_for_a_reload(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope"
    loaded = load_dag_folder(missing)
    assert loaded.dags == {}
    [problem] = loaded.problems[str(missing)]
    assert "does not exist" in problem.message
    watched = DagFolder(missing)
    assert watched.reload().refused == []
    assert watched.ok


@pytest.mark.parametrize("names", [("a", "b"), ("b", "a")])
def test_a_duplicate_id_stays_with_the_first_file_by_sorted_path(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    # Written in either order: the first by sorted path keeps the id, the other is reported
    # as a problem naming both files.
    for name in names:
        write(tmp_path, name, f'id = "same"\ndescription = "{name}"\n' + GOOD)
    folder = load_dag_folder(tmp_path)
    assert folder.dags["same"].description == "a"
    [problem] = folder.problems[str(tmp_path / "b.toml")]
    assert str(problem) == (
        f"{tmp_path / 'b.toml'}: field 'id': DAG id 'same' is already used by {tmp_path / 'a.toml'}"
    )


def test_a_duplicate_id_goes_to_the_file_named_after_it(tmp_path: Path) -> None:
    """Before any other file, even one earlier by sorted path."""
    write(tmp_path, "dup", 'id = "etl"\ndescription = "impostor"\n' + GOOD)
    etl = write(tmp_path, "etl", 'description = "real"\n' + GOOD)
    folder = load_dag_folder(tmp_path)
    assert folder.dags["etl"].description == "real"
    [problem] = folder.problems[str(tmp_path / "dup.toml")]
    assert problem.message == f"DAG id 'etl' is already used by {etl}"


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        ("etl", "dup", "etl"),  # the file named after the id, whichever came first
        ("dup", "etl", "etl"),
        ("a", "b", "a"),  # neither is named after it: the first by sorted path
        ("b", "a", "a"),
    ],
)
def test_which_file_keeps_a_duplicate_id_does_not_depend_on_history(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first: str, second: str, winner: str
) -> None:
    """The daemon sees the files appear one after the other; it ends where a fresh read (the
    CLI, a restart) starts: the same file keeps the id, the other is refused naming it."""
    folder = DagFolder(tmp_path, logging.getLogger("test.dagfolder"))
    write(tmp_path, first, f'id = "etl"\ndescription = "{first}"\n' + GOOD)
    folder.reload()
    assert folder.dags["etl"].description == first
    write(tmp_path, second, f'id = "etl"\ndescription = "{second}"\n' + GOOD)
    caplog.set_level(logging.INFO, logger="test.dagfolder")
    reloaded = folder.reload()
    loser = second if winner == first else first
    assert reloaded.changed and [r.path.stem for r in reloaded.refused] == [loser]
    # Reported under its last good DAG's id, else its stem (a file new to the folder).
    assert reloaded.refused[0].dag_id == ("etl" if loser == first else loser)
    fresh = load_dag_folder(tmp_path)
    for seen in (folder, fresh):
        assert seen.dags["etl"].description == winner
        [problem] = seen.problems[str(tmp_path / f"{loser}.toml")]
        assert problem.message == f"DAG id 'etl' is already used by {tmp_path / winner}.toml"
    if winner == second:
        assert f"DAG etl now comes from {winner}.toml, not {first}.toml" in caplog.text
    # The winner gives the id up: the other file gets it at once, as it would on a fresh read.
    (tmp_path / f"{winner}.toml").unlink()
    assert folder.reload().refused == []
    assert folder.dags["etl"].description == loser and folder.ok


def test_a_reload_reads_only_what_changed(tmp_path: Path) -> None:
    path = write(tmp_path, "live", 'description = "v1"\n' + GOOD)
    folder = DagFolder(tmp_path)
    assert folder.reload().changed
    first = folder.dags["live"]
    assert not folder.reload().changed
    assert folder.dags["live"] is first  # not read again
    write(tmp_path, "live", 'description = "v2"\n' + GOOD)
    assert folder.reload().changed
    assert folder.dags["live"].description == "v2"
    path.unlink()
    assert folder.reload().changed
    assert folder.dags == {}


def test_a_same_size_rewrite_within_one_mtime_tick_is_noticed(tmp_path: Path) -> None:
    path = write(tmp_path, "tick", '[steps.s]\ncommand = "echo aaa"\n')
    folder = DagFolder(tmp_path)
    folder.reload()
    before = path.stat()
    path.write_text('[steps.s]\ncommand = "echo bbb"\n')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime, same size
    assert path.stat().st_size == before.st_size
    assert folder.reload().changed
    assert folder.dags["tick"].steps["s"].command == "echo bbb"


def test_a_broken_edit_keeps_the_last_good_version_and_is_reported_once(tmp_path: Path) -> None:
    write(tmp_path, "live", 'description = "good"\n' + GOOD)
    folder = DagFolder(tmp_path)
    folder.reload()
    path = write(tmp_path, "live", '[steps.s]\ncommand = "x"\ndepends_on = ["nope"]\n')
    reloaded = folder.reload()
    [refused] = reloaded.refused
    assert (refused.path, refused.dag_id) == (path, "live")
    assert "unknown step 'nope'" in refused.text
    assert folder.dags["live"].description == "good"
    assert folder.reload().refused == []  # not reported again until it changes
    write(tmp_path, "live", 'description = "fixed"\n' + GOOD)
    assert folder.reload().refused == []
    assert folder.ok
    assert folder.dags["live"].description == "fixed"


def test_a_broken_new_file_is_reported_under_its_stem(tmp_path: Path) -> None:
    write(tmp_path, "fresh", "this is = not toml [")
    [refused] = DagFolder(tmp_path).reload().refused
    assert refused.dag_id == "fresh"


def test_a_freed_id_goes_to_the_refused_file_at_once(tmp_path: Path) -> None:
    one = write(tmp_path, "one", 'id = "same"\n' + GOOD)
    folder = DagFolder(tmp_path)
    folder.reload()
    two = write(tmp_path, "two", 'id = "same"\n' + GOOD)
    [refused] = folder.reload().refused
    assert refused.path == two and "already used" in refused.text
    one.unlink()
    reloaded = folder.reload()
    assert reloaded.changed and reloaded.refused == []
    assert folder.dags["same"].source == str(two)
    assert folder.ok


def test_an_id_given_up_by_a_rename_goes_to_the_refused_file(tmp_path: Path) -> None:
    write(tmp_path, "one", 'id = "same"\n' + GOOD)
    folder = DagFolder(tmp_path)
    folder.reload()
    two = write(tmp_path, "two", 'id = "same"\n' + GOOD)
    folder.reload()
    write(tmp_path, "one", 'id = "other"\n' + GOOD)
    folder.reload()
    assert folder.dags["same"].source == str(two)
    assert folder.dags["other"].source == str(tmp_path / "one.toml")
    assert folder.ok


def test_only_a_folder_given_a_log_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "one", GOOD)
    write(tmp_path, "bad", "nope [")
    with caplog.at_level(logging.INFO, logger="test.dagfolder"):
        load_dag_folder(tmp_path)
        assert caplog.records == []
        DagFolder(tmp_path, logging.getLogger("test.dagfolder")).reload()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("loaded DAG one") for m in messages)
    assert any("cannot load DAG file" in m for m in messages)


def test_a_hostile_edit_keeps_the_last_good_version_and_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "one", 'description = "good"\n' + GOOD)
    folder = DagFolder(tmp_path)
    folder.reload()
    for text in (
        "x = " + "[" * 3000 + "]" * 3000,
        GOOD + "timeout = " + "9" * 400,
        GOOD + "retry_backoff = " + "9" * 400,
    ):
        write(tmp_path, "one", text)
        [refused] = folder.reload().refused
        assert refused.path == path and refused.dag_id == "one"
        assert refused.text.startswith(f"{path}: ") and "\n" not in refused.text
        assert folder.dags["one"].description == "good"


def test_file_bytes_bom_bad_utf8_and_size(tmp_path: Path) -> None:
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    (tmp_path / "latin1.toml").write_bytes(b'description = "caf\xe9"\n' + GOOD.encode())
    big = tmp_path / "big.toml"
    big.write_bytes(GOOD.encode() + b"#" * (1024 * 1024))
    (tmp_path / "link.toml").symlink_to(tmp_path / "link.toml")  # a loop: not a file
    os.mkfifo(tmp_path / "fifo.toml")  # never opened: a reload must not block on it
    folder = load_dag_folder(tmp_path)
    assert set(folder.dags) == {"bom"}
    assert "not UTF-8 text" in str(folder.problems[str(tmp_path / "latin1.toml")][0])
    assert str(folder.problems[str(big)][0]) == f"{big}: larger than 1 MiB: not read"
    assert set(folder.problems) == {str(tmp_path / "latin1.toml"), str(big)}


def test_a_step_naming_an_executor_not_configured_is_its_files_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "big",
        """
        executor = "dask"
        [steps.crunch]
        command = "true"
        [steps.publish]
        command = "true"
        executor = "local"
        """,
    )
    # No names given: nothing is checked (the loader does not know the configuration).
    assert set(load_dag_folder(tmp_path).dags) == {"big"}
    assert set(load_dag_folder(tmp_path, executors=("local", "dask")).dags) == {"big"}
    folder = load_dag_folder(tmp_path, executors=("local",))
    assert folder.dags == {}
    # The DAG-level key is the problem, once; not each step that inherits it.
    assert list(map(str, folder.problems[str(path)])) == [
        f"{path}: field 'executor': no executor 'dask' is configured; configured: local"
    ]


def test_an_executor_name_is_reported_where_it_is_written_with_a_suggestion(
    tmp_path: Path,
) -> None:
    """A misspelt DAG-level executor is one problem without a step; a step that names its own
    executor has its own problem; both say which configured name was probably meant."""
    path = write(
        tmp_path,
        "typo",
        """
        executor = "dsak"
        [steps.a]
        command = "true"
        [steps.b]
        call = "no_such_module_anywhere:run"
        [steps.c]
        command = "true"
        executor = "loacl"
        [steps.d]
        command = "true"
        executor = "local"
        """,
    )
    folder = load_dag_folder(tmp_path, executors=("local", "dask"))
    configured = "configured: local, dask"
    assert list(map(str, folder.problems[str(path)])) == [
        f"{path}: field 'executor': no executor 'dsak' is configured"
        f" (did you mean 'dask'?); {configured}",
        f"{path}: step 'c': field 'executor': no executor 'loacl' is configured"
        f" (did you mean 'local'?); {configured}",
    ]
    write(tmp_path, "typo", 'executor = "gpu"\n[steps.a]\ncommand = "true"\n')
    folder = load_dag_folder(tmp_path, executors=("local", "dask"))
    assert list(map(str, folder.problems[str(path)])) == [
        f"{path}: field 'executor': no executor 'gpu' is configured; {configured}"
    ]
    # Every step names its own: the DAG's key is used by none, and nothing is wrong.
    write(tmp_path, "typo", 'executor = "gpu"\n[steps.a]\ncommand = "true"\nexecutor = "dask"\n')
    folder = load_dag_folder(tmp_path, executors=("local", "dask"))
    assert folder.ok and folder.dags["typo"].steps["a"].executor == "dask"


def test_an_edit_to_an_unconfigured_executor_keeps_the_last_good_version(tmp_path: Path) -> None:
    write(tmp_path, "one", GOOD)
    folder = DagFolder(tmp_path, executors=("local",))
    folder.reload()
    write(tmp_path, "one", GOOD + 'executor = "dask"\n')
    [refused] = folder.reload().refused
    assert refused.dag_id == "one" and "no executor 'dask' is configured" in refused.text
    assert folder.dags["one"].steps["s"].executor == "local"


def test_the_log_says_whether_a_broken_files_dag_keeps_a_good_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "live", GOOD)
    write(tmp_path, "bad", "nope [")
    folder = DagFolder(tmp_path, logging.getLogger("test.dagfolder"))
    with caplog.at_level(logging.ERROR, logger="test.dagfolder"):
        folder.reload()
        [never] = [r.getMessage() for r in caplog.records]
        assert "bad.toml" in never and "(the DAG is not loaded)" in never
        assert "last good version" not in never
        caplog.clear()
        write(tmp_path, "live", "nope [")
        folder.reload()
        [broke] = [r.getMessage() for r in caplog.records]
        assert "live.toml" in broke and "(keeping the last good version)" in broke


def test_an_edit_that_closes_a_cycle_of_runs_keeps_the_last_good_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "ca", '[steps.s]\nrun = "cb"\n')
    write(tmp_path, "cb", 'description = "good"\n' + GOOD)
    folder = DagFolder(tmp_path, log=logging.getLogger("dagd.test"))
    assert folder.reload().refused == []
    path = write(tmp_path, "cb", '[steps.s]\nrun = "ca"\n')
    with caplog.at_level(logging.INFO, "dagd.test"):
        [refused] = folder.reload().refused
    assert (refused.path, refused.dag_id) == (path, "cb")
    assert "in a cycle: cb -> ca -> cb" in refused.text or "ca -> cb -> ca" in refused.text
    assert folder.dags["cb"].description == "good"
    assert list(folder.problems) == [str(path)]
    assert "reloaded DAG cb" not in caplog.text
    assert "keeping the last good version" in caplog.text
    assert folder.reload().refused == []  # not reported again until it changes
    write(tmp_path, "cb", 'description = "fixed"\n' + GOOD)
    assert folder.reload().refused == []
    assert folder.ok and folder.dags["cb"].description == "fixed"


def test_a_new_file_that_closes_a_cycle_is_not_loaded(tmp_path: Path) -> None:
    write(tmp_path, "ca", '[steps.s]\nrun = "cb"\n')
    folder = DagFolder(tmp_path)
    folder.reload()
    path = write(tmp_path, "cb", '[steps.s]\nrun = "ca"\n')
    [refused] = folder.reload().refused
    assert (refused.path, refused.dag_id) == (path, "cb")
    assert sorted(folder.dags) == ["ca"]
