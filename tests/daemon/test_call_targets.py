"""`call` targets checked when a DAG file loads: imported the way the local executor imports
them, each failure one line naming the file, the step and the field, never a crash."""

from __future__ import annotations

import itertools
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from daemonhelp import write_dag_file

from dagd.daemon.dagfolder import DagFolder, Reloaded, load_dag_folder

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


class Ticker:
    """A task that wakes every millisecond and notes the longest gap between two wake-ups
    (seconds): how long the event loop was kept from running anything else."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


async def test_a_module_slow_to_import_does_not_stall_the_event_loop(
    tmp_path: Path, modules: Path
) -> None:
    """The daemon's reload imports `call` modules in a worker thread: one that sleeps 1 s
    when imported keeps a ticking task from running for well under 0.5 s (measured here:
    about 2 ms, 0.1 s under heavy load; `reload()` on the loop: the full 1 s). The bound is
    half the import so that load cannot fail it, and a stall on the loop still would."""
    name = fresh("slow")
    write_module(modules, name, "import time\ntime.sleep(1.0)\ndef run(ctx):\n    pass\n")
    dag(tmp_path, "slow", f"{name}:run")
    folder = DagFolder(tmp_path / "dags")
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.sleep(0.01)
        start = time.perf_counter()
        reloaded = await folder.reload_in_thread()
        took = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    assert reloaded.changed and reloaded.refused == [] and set(folder.dags) == {"slow"}
    assert took >= 1.0
    assert ticker.longest < 0.5, f"the loop stalled {ticker.longest:.3f}s"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a test module waits for while it is imported (as `dagd_test_gate.gate`)."""
    event = threading.Event()
    module = types.ModuleType("dagd_test_gate")
    module.gate = event  # type: ignore[attr-defined]
    sys.modules["dagd_test_gate"] = module
    yield event
    event.set()
    del sys.modules["dagd_test_gate"]


GATED = "import dagd_test_gate\ndagd_test_gate.gate.wait(10)\ndef run(ctx):\n    pass\n"


async def test_while_a_reload_imports_the_loop_reads_the_last_whole_state(
    tmp_path: Path, modules: Path, gate: threading.Event
) -> None:
    """The reload works on a copy: until its import is done, `dags` and `problems` are the
    previous reload's, unchanged; then the new state is there at once, whole."""
    good = dag(tmp_path, "good", "builtins:print")
    folder = DagFolder(tmp_path / "dags")
    folder.reload()
    before = (folder.dags, folder.problems)
    name = fresh("gated")
    write_module(modules, name, GATED)
    dag(tmp_path, "gated", f"{name}:run")
    dag(tmp_path, "broken", "not a target")
    good.unlink()
    async with trio.open_nursery() as nursery:
        done: list[Reloaded] = []

        async def reload() -> None:
            done.append(await folder.reload_in_thread())

        nursery.start_soon(reload)
        with trio.fail_after(5):
            while name not in sys.modules:  # the thread is importing it now
                await trio.sleep(0.001)
        assert (folder.dags, folder.problems) == before
        assert set(folder.dags) == {"good"} and folder.ok
        gate.set()
    [reloaded] = done
    assert set(folder.dags) == {"gated"}
    assert list(folder.problems) == [str(tmp_path / "dags" / "broken.toml")]
    assert [r.dag_id for r in reloaded.refused] == ["broken"]


async def test_a_cancelled_reload_leaves_the_state_as_it_was(
    tmp_path: Path, modules: Path, gate: threading.Event
) -> None:
    """Cancelled while its thread imports (the daemon stopping), a reload changes nothing;
    the next one finds the file changed as if it had never run."""
    name = fresh("gated")
    write_module(modules, name, GATED)
    dag(tmp_path, "gated", f"{name}:run")
    folder = DagFolder(tmp_path / "dags")
    with trio.move_on_after(0.05) as scope:
        await folder.reload_in_thread()
    assert scope.cancelled_caught
    assert folder.dags == {} and folder.ok
    gate.set()
    reloaded = await folder.reload_in_thread()
    assert reloaded.changed and set(folder.dags) == {"gated"}
