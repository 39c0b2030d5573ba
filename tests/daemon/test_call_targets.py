"""`call` targets checked when a DAG file loads: imported the way the local executor imports
them, each failure one line naming the file, the step and the field, never a crash."""

from __future__ import annotations

import itertools
import textwrap
import time
from pathlib import Path

import pytest
from daemonhelp import write_dag_file

from dagd.daemon.dagfolder import DagFolder, load_dag_folder

BUNDLED = Path(__file__).resolve().parents[2] / "dags"
_names = itertools.count()


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for the modules a test writes (each test uses fresh names)."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def fresh(prefix: str) -> str:
    """A module name no other test (and no earlier import) has used."""
    return f"dagd_test_{prefix}_{next(_names)}_{time.monotonic_ns()}"


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def dag(tmp_path: Path, name: str, *calls: str, executor: str | None = None) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    text = f'executor = "{executor}"\n' if executor else ""
    text += "".join(f'[steps.s{i}]\ncall = "{call}"\n' for i, call in enumerate(calls))
    return write_dag_file(dags, name, text)


def lines(folder: DagFolder, path: Path) -> list[str]:
    return [str(problem) for problem in folder.problems.get(str(path), [])]


def test_each_kind_of_bad_target_is_one_line_naming_file_step_and_field(
    tmp_path: Path, modules: Path
) -> None:
    name, missing = fresh("jobs"), fresh("missing")
    write_module(modules, name, "VALUE = 3\ndef run(ctx):\n    pass\n")
    path = dag(
        tmp_path,
        "jobs",
        f"{name}:run",
        f"{missing}:run",
        f"{missing}.sub:run",
        f"{name}:nope",
        f"{name}:VALUE",
        f"{name}:run.deeper",
    )
    folder = load_dag_folder(tmp_path / "dags")
    assert folder.dags == {}
    assert lines(folder, path) == [
        f"{path}: step 's1': field 'call': cannot import module {missing!r}: "
        f"No module named {missing!r}",
        f"{path}: step 's2': field 'call': cannot import module '{missing}.sub': "
        f"No module named {missing!r}",
        f"{path}: step 's3': field 'call': module {name!r} has no attribute 'nope'",
        f"{path}: step 's4': field 'call': '{name}:VALUE' is not callable",
        f"{path}: step 's5': field 'call': 'function' object has no attribute 'deeper'",
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("1 / 0", "ZeroDivisionError: division by zero"),
        ("raise RuntimeError('line one\\nline two')", "RuntimeError: line one\\nline two"),
        ("import sys\nsys.exit('bye')", "SystemExit: bye"),
        ("import dagd_no_such_dependency_here", "No module named 'dagd_no_such_dependency_here'"),
        ("def broken(:\n    pass", "SyntaxError: "),
    ],
    ids=["raises", "multi-line-message", "sys-exit", "missing-dependency", "syntax-error"],
)
def test_a_module_failing_on_import_is_its_files_problem_and_others_still_load(
    tmp_path: Path, modules: Path, body: str, says: str
) -> None:
    name = fresh("failing")
    write_module(modules, name, body + "\n")
    bad = dag(tmp_path, "bad", f"{name}:run")
    dag(tmp_path, "good", "stepfuncs:noop")
    folder = load_dag_folder(tmp_path / "dags")
    assert set(folder.dags) == {"good"}
    [line] = lines(folder, bad)
    assert line.startswith(f"{bad}: step 's0': field 'call': cannot import module {name!r}: ")
    assert says in line and "\n" not in line and "Traceback" not in line


def test_steps_of_other_executors_are_not_imported(tmp_path: Path, modules: Path) -> None:
    # A Dask step's module may exist only on the workers.
    missing = fresh("onworkers")
    dag(tmp_path, "remote", f"{missing}:run", executor="dask")
    folder = load_dag_folder(tmp_path / "dags", executors=("local", "dask"))
    assert folder.ok and set(folder.dags) == {"remote"}


def test_a_module_installed_later_loads_the_dag_without_touching_its_file(
    tmp_path: Path, modules: Path
) -> None:
    name = fresh("later")
    path = dag(tmp_path, "later", f"{name}:run")
    folder = DagFolder(tmp_path / "dags")
    [refused] = folder.reload().refused
    assert "No module named" in refused.text
    reloaded = folder.reload()  # the same problem is not reported again
    assert (reloaded.changed, reloaded.refused) == (False, [])
    write_module(modules, name, "def run(ctx):\n    pass\n")
    reloaded = folder.reload()
    assert reloaded.changed and reloaded.refused == []
    assert folder.ok and folder.dags["later"].source == str(path)


def test_a_module_that_fails_on_import_runs_again_only_when_the_dag_file_changes(
    tmp_path: Path, modules: Path
) -> None:
    name = fresh("counted")
    counter = tmp_path / "imports.txt"
    write_module(
        modules, name, f"with open({str(counter)!r}, 'a') as f:\n    f.write('x')\n1 / 0\n"
    )
    dag(tmp_path, "counted", f"{name}:run")
    folder = DagFolder(tmp_path / "dags")
    assert len(folder.reload().refused) == 1
    for _ in range(3):
        assert folder.reload().refused == []
    assert counter.read_text() == "x"
    write_module(modules, name, "def run(ctx):\n    pass\n")
    dag(tmp_path, "counted", f"{name}:run", f"{name}:run")  # the file changes: a new look
    assert folder.reload().refused == [] and folder.ok
    assert len(folder.dags["counted"].steps) == 2


def test_the_bundled_dags_load_and_a_reload_of_them_stays_cheap() -> None:
    folder = DagFolder(BUNDLED)
    folder.reload()
    assert folder.ok and set(folder.dags) == {"etl", "report"}
    start = time.perf_counter()
    for _ in range(100):
        folder.reload()
    per_reload = (time.perf_counter() - start) / 100
    # Measured about 30 µs here: a stat per file, no import. A generous bound for CI.
    assert per_reload < 0.005
