"""The folder of DAG files: one loader for the CLI (`dagd validate`, `list`, `run`) and for the
daemon's hot reload.

Rules this file keeps:
- Every `*.toml` file directly in the folder is one DAG, read in sorted path order. One broken
  file never hides the others: the caller gets the DAGs that loaded and the problems of the
  rest, each naming its file.
- One rule for duplicate DAG ids, whatever the order the files appeared in (a fresh read, the
  CLI and the daemon agree): the file named after the id (`<id>.toml`) keeps it, else the
  first by sorted path, and the other file is a problem naming both files. A file added or
  edited with the better claim takes the id over from the file that had it (logged).
- A file whose DAG would close a cycle of `run`/`after` links with the loaded DAGs
  (dagd/core/dagrefs.py) is refused like a broken one: its last good version stays. Refused
  so, it gets another look whenever another file changes (that may have broken the cycle).
- A step must name an executor that is configured (when the caller gives the configured
  names): a step naming another one makes its file a problem, like any error in the file,
  reported where the name is written (a DAG-level `executor` once, not at each step that
  inherits it), with the configured name it may be a typo of.
- A Python step's `call` must name something callable, imported here exactly as the local
  executor will (runtime/local/python.py), for steps that run locally (a Dask step's module
  may exist only on the workers). A missing module, a missing attribute, an object that is not
  callable, or an exception raised while importing the module is that file's problem, one line
  each. Imports happen only when a file is read: a module imported once stays imported (as for
  the executor), and a file refused because its module is simply not installed is looked at
  again at each reload (a cheap search of the import path, nothing of the module runs), so it
  loads by itself once the module is installed; other import failures are tried again when the
  DAG file changes. The same goes for lifecycle handlers' executors and `call` targets.
- A notification handler's URLs must be ones Apprise can read (runtime/notify.py, no network
  used; a URL with `$VAR` only for its scheme, its value being known when it is sent).
- Reloading is incremental: a file is read again only when its (mtime, ctime, size, inode)
  changed. A file that breaks keeps its last good version; when a DAG id is given up (its file
  deleted, or its id changed), the files refused for using it get another look at once.
- The daemon reloads off its event loop (`reload_in_thread`): a `call` module may take seconds
  to import (or sleep, or read a network share), and the loop serves heartbeats, the store's
  writer and every client meanwhile. A reload works on a copy of the folder's state in a worker
  thread and the result replaces the state on the loop in one assignment, so what the loop
  reads (`dags`, `problems`) is always one whole reload's. A module that holds the GIL while
  it is imported (pure-Python computing) still slows the loop: only waiting is taken off it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Collection, Mapping
from pathlib import Path

import attrs
import trio

from dagd.core.dagrefs import link_cycles, link_problems
from dagd.core.model import DagSpec, StepSpec
from dagd.core.spec import DEFAULT_EXECUTOR, DagSpecError, Problem, parse_dag
from dagd.runtime.local.python import CallableNotFound, resolve_callable
from dagd.runtime.notify import url_problem

#: What tells a file changed: an edit shows in one of these even within one coarse mtime tick
#: (editors that save by rename make a new inode, and a write moves ctime too).
Stamp = tuple[int, int, int, int]

#: A DAG file larger than this (bytes) is refused unread: no DAG needs it, and reading and
#: parsing an arbitrarily large file would stall every reload.
MAX_FILE_BYTES = 1024 * 1024


def dag_files(folder: Path) -> list[Path]:
    """The DAG files of `folder`, sorted by path."""
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def load_dag_file(path: Path) -> DagSpec:
    """Parse one file (its id defaults to the file name's stem); raises DagSpecError naming the
    file, and nothing else, for a file that cannot be read or is not a valid DAG (parse_dag
    decodes the bytes: a byte-order mark is skipped, bad UTF-8 is a problem)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        message = f"cannot read file: {exc.strerror or exc}"
        raise DagSpecError([Problem(str(path), message)]) from None
    if len(data) > MAX_FILE_BYTES:
        message = f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB: not read"
        raise DagSpecError([Problem(str(path), message)])
    return parse_dag(data, str(path), default_id=path.stem)


def _where(step: StepSpec) -> str:
    """How a problem names a step: its id, or a handler's table (`handlers.on_failure`)."""
    return f"handlers.{step.handler.value}" if step.handler is not None else step.id


def unconfigured(name: str, executors: Collection[str]) -> str:
    """Why steps cannot run on executor `name`, which is not among `executors` (the configured
    names, `Config.executor_names`): one line, with the configured name it may be a typo of."""
    close = difflib.get_close_matches(name, list(executors), n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no executor {name!r} is configured{guess}; configured: {', '.join(executors)}"


@attrs.frozen
class CallProblem:
    """Why a `call` target cannot be called: `message` (one line, Python's own words), and
    whether looking again later is cheap (`cheap`: the module or a parent package is simply
    not installed, so trying again runs none of its code)."""

    message: str
    cheap: bool


def call_problem(target: str) -> CallProblem | None:
    """None if `target` (`module:function`) resolves to a callable the way the local executor
    resolves it (`resolve_callable`: the module is imported, once per process), else why not.
    Never raises for anything the module does while it is imported (SystemExit included)."""
    module = target.partition(":")[0]
    try:
        resolve_callable(target)
    except CallableNotFound as exc:
        cause = exc.__cause__
        if isinstance(cause, ModuleNotFoundError) and cause.name is not None:
            missing = cause.name
            cheap = module == missing or module.startswith(missing + ".")
            return CallProblem(str(exc), cheap)
        if cause is not None and not isinstance(cause, ImportError):
            # The module raised while it was imported: say what, not only its message.
            text = f"cannot import module {module!r}: {type(cause).__name__}: {_text(cause)}"
            return CallProblem(text, cheap=False)
        return CallProblem(str(exc), cheap=False)
    except SystemExit as exc:  # a module that calls sys.exit() when imported
        return CallProblem(f"cannot import module {module!r}: SystemExit: {exc}", cheap=False)
    return None


def _text(exc: BaseException) -> str:
    """`str(exc)`, or what can be said when that itself fails (a broken `__str__`)."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"


def problems_text(problems: list[Problem]) -> str:
    """Problems as text, one per line, each naming its file."""
    return "\n".join(map(str, problems))


#: Which of two files claiming one DAG id keeps it (said in the log when it changes hands).
_CLAIM_RULE = "the file named after the id keeps it, else the first by sorted path"


def _claim(path: Path, dag_id: str) -> tuple[bool, Path]:
    """How strong a file's claim to `dag_id` is, lower first (`_CLAIM_RULE`): the same for a
    fresh read and for the daemon, whichever file appeared first."""
    return path.stem != dag_id, path


def _duplicate(path: Path, dag_id: str, owner: Path) -> Problem:
    return Problem(str(path), f"DAG id {dag_id!r} is already used by {owner}", field="id")


@attrs.frozen
class Refused:
    """A file a reload could not use; `dag_id` is its last good DAG's id, else the file's stem."""

    path: Path
    dag_id: str
    problems: list[Problem]

    @property
    def text(self) -> str:
        """The problems, one per line, each naming the file."""
        return problems_text(self.problems)


@attrs.frozen
class Reloaded:
    """What one `DagFolder.reload()` changed."""

    changed: bool  # the set of DAGs (or one of them) is not what it was
    refused: list[Refused]  # files newly found broken or duplicate, in path order


@attrs.frozen
class _File:
    stamp: Stamp | None  # None: look again at the next reload whatever the stamp says
    dag_id: str | None  # the id this file's DAG has (or had, when last good)


@attrs.define
class _State:
    """Everything a reload reads and changes. A reload changes a copy (`copy`), never the
    state the loop reads: the values (DagSpec, Problem lists, _File, tuples) are never
    changed in place, only replaced, so copying the containers is enough."""

    dags: dict[str, DagSpec] = attrs.Factory(dict)
    problems: dict[str, list[Problem]] = attrs.Factory(dict)
    files: dict[Path, _File] = attrs.Factory(dict)
    duplicates: set[Path] = attrs.Factory(set)  # files refused because their DAG id was taken
    # Files refused only because a module is not installed: the parsed DAG and its problems,
    # looked at again at each reload (see the module's docstring).
    waiting: dict[Path, tuple[DagSpec, list[Problem]]] = attrs.Factory(dict)
    # Files refused because their DAG closed a cycle of runs: looked at again when another
    # file changes (that may have broken the cycle).
    cyclic: set[Path] = attrs.Factory(set)

    def copy(self) -> _State:
        return _State(
            dict(self.dags),
            dict(self.problems),
            dict(self.files),
            set(self.duplicates),
            dict(self.waiting),
            set(self.cyclic),
        )


class DagFolder:
    """The DAGs of one folder, kept up to date by `reload()` (in the calling thread) or
    `reload_in_thread()` (the daemon's, off its event loop).

    `dags` maps DAG id to its spec (`spec.source` names the file); `problems` maps a file path
    (as text) to what is wrong with it, for every file that is broken or refused now. Both are
    replaced whole by each reload: read them anew, do not keep them. With a `log`, loads,
    removals and refusals are logged there (the daemon's log; the CLI prints problems
    itself). With `executors` (the configured executor names, `Config.executor_names`), a
    file whose step names any other executor is refused; None checks no names. Every local
    step's `call` is imported and checked (`call_problem`). With `pools` (`Config.pools`:
    name -> slots), a file whose step names any other pool, or asks for more slots than its
    pool has, is refused; None checks no pools.
    """

    def __init__(
        self,
        folder: Path,
        log: logging.Logger | None = None,
        executors: Collection[str] | None = None,
        pools: Mapping[str, int] | None = None,
    ) -> None:
        self.folder = folder
        self._log = log
        self._executors = tuple(executors) if executors is not None else None
        self._pools = dict(pools) if pools is not None else None
        self._state = _State()
        self._reloading = trio.Lock()  # one reload_in_thread at a time

    @property
    def dags(self) -> dict[str, DagSpec]:
        """The loaded DAGs by id, as of the last reload."""
        return self._state.dags

    @property
    def problems(self) -> dict[str, list[Problem]]:
        """What is wrong with each broken or refused file, by path (as text), as of the last
        reload."""
        return self._state.problems

    @property
    def ok(self) -> bool:
        """No file has a problem."""
        return not self.problems

    def reload(self) -> Reloaded:
        """Pick up added, changed and removed files (a missing folder holds none), in the
        calling thread: imports of `call` modules included (for `dagd validate`, `list` and
        `run`; the daemon uses `reload_in_thread`). A broken file keeps its last good version;
        it is reported once per change, in `refused`."""
        state, reloaded = self._reloaded(self._state)
        self._state = state
        return reloaded

    async def reload_in_thread(self) -> Reloaded:
        """`reload`, with the files read and `call` modules imported in a worker thread, so
        the event loop goes on meanwhile (reading the state of the reload before). The new
        state replaces the old on the loop, at once. One at a time: a second call waits for
        the first. Cancelled, it leaves the state as it was (the thread finishes by itself;
        what it imported stays imported, as after any reload)."""
        async with self._reloading:
            while True:
                base = self._state
                state, reloaded = await trio.to_thread.run_sync(
                    self._reloaded, base, abandon_on_cancel=True
                )
                if self._state is base:
                    self._state = state
                    return reloaded
                # A `reload()` on the loop replaced the state meanwhile: start from its.

    def _reloaded(self, base: _State) -> tuple[_State, Reloaded]:
        """A reload computed on a copy of `base` (which it leaves alone): the new state and
        what changed. Safe in a worker thread: it touches nothing the loop reads."""
        state = base.copy()
        changed = False
        refused: list[Refused] = []
        relooked = False
        while True:
            again_changed, freed = self._pass(state, refused)
            changed = changed or again_changed
            # Another file changed: a file refused for a cycle at an earlier reload (and not
            # read again by this one) may load now. Once a reload, so this ends.
            stale = [p for p in state.cyclic if state.files[p] == base.files.get(p)]
            if again_changed and stale and not relooked:
                relooked = True
                for path in stale:
                    state.files[path] = attrs.evolve(state.files[path], stamp=None)
                continue
            if not (freed and state.duplicates):
                return state, Reloaded(changed, refused)
            # A DAG id was given up: a file refused for using it gets another look now, not
            # only at its next edit.
            for dup in state.duplicates:
                state.files[dup] = attrs.evolve(state.files[dup], stamp=None)

    def _pass(self, st: _State, refused: list[Refused]) -> tuple[bool, bool]:
        """One look at every file: (something changed, a DAG id was given up)."""
        changed = freed = False
        seen: set[Path] = set()
        kept_dags = dict(st.dags)  # to put back a DAG whose new version closes a cycle
        loaded: list[tuple[Path, DagSpec, str, Path | None, Stamp, str | None]] = []
        for path in dag_files(self.folder) if self.folder.is_dir() else []:
            seen.add(path)
            try:
                info = path.stat()
            except OSError:
                continue
            stamp = (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)
            old = st.files.get(path)
            old_id = old.dag_id if old else None
            if old is not None and old.stamp == stamp:
                waiting = st.waiting.get(path)
                if waiting is None:
                    continue
                dag, before = waiting
                problems, cheap = self._problems(dag)
                if problems == before:
                    continue
            else:
                st.waiting.pop(path, None)
                try:
                    dag = load_dag_file(path)
                except DagSpecError as exc:
                    changed = True
                    refused.append(self._refuse(st, path, stamp, old_id, exc.problems))
                    continue
                problems, cheap = self._problems(dag)
            changed = True
            if problems:
                refused.append(self._refuse(st, path, stamp, old_id, problems))
                if cheap:
                    st.waiting[path] = (dag, problems)
                continue
            st.waiting.pop(path, None)
            owner = st.dags.get(dag.id)
            taken_from: Path | None = None
            if owner is not None and owner.source != str(path):
                owner_path = Path(str(owner.source))
                if _claim(owner_path, dag.id) < _claim(path, dag.id):
                    problem = _duplicate(path, dag.id, owner_path)
                    refused.append(self._refuse(st, path, stamp, old_id, [problem], True))
                    continue
                # This file has the better claim: the owner's file is refused in its turn,
                # as it would be on a fresh read of the folder.
                taken_from = owner_path
                problem = _duplicate(owner_path, dag.id, path)
                owner_stamp = st.files[owner_path].stamp if owner_path in st.files else None
                refused.append(
                    self._refuse(st, owner_path, owner_stamp, dag.id, [problem], True, kept=False)
                )
            if old_id is not None and old_id != dag.id:
                given_up = st.dags.get(old_id)
                if given_up is not None and given_up.source == str(path):
                    del st.dags[old_id]
                    freed = True
            st.dags[dag.id] = dag
            st.files[path] = _File(stamp, dag.id)
            st.duplicates.discard(path)
            st.cyclic.discard(path)
            st.problems.pop(str(path), None)
            loaded.append((path, dag, "reloaded" if old else "loaded", taken_from, stamp, old_id))
        # A file whose new version makes DAGs cause each other's runs in a cycle is refused
        # like a broken one (`dagd validate` refuses it too): its last good version stays.
        cycles = {dag_id: cycle for cycle in link_cycles(st.dags) for dag_id in cycle}
        for path, dag, verb, taken_from, stamp, old_id in loaded:
            cycle = cycles.get(dag.id)
            if cycle is not None:
                previous = kept_dags.get(dag.id)
                if previous is not None and previous.source == str(path):
                    st.dags[dag.id] = previous
                else:
                    del st.dags[dag.id]
                text = f"DAGs cause each other's runs in a cycle: {' -> '.join(cycle)}"
                at = next((x.id for x in dag.steps.values() if x.run in cycle), None)
                problem = Problem(str(path), text, at, "run" if at is not None else "after")
                refused.append(self._refuse(st, path, stamp, old_id or dag.id, [problem]))
                st.cyclic.add(path)
                continue
            if self._log:
                self._log.info("%s DAG %s from %s", verb, dag.id, path.name)
                if taken_from is not None:
                    self._log.warning(
                        "DAG %s now comes from %s, not %s: %s",
                        dag.id,
                        path.name,
                        taken_from.name,
                        _CLAIM_RULE,
                    )
        for path in list(st.files):
            if path not in seen:
                st.waiting.pop(path, None)
                dag_id = st.files.pop(path).dag_id
                st.problems.pop(str(path), None)
                owned = st.dags.get(dag_id) if dag_id is not None else None
                if owned is not None and owned.source == str(path):
                    del st.dags[owned.id]
                    freed = True
                    if self._log:
                        self._log.info("removed DAG %s (%s was deleted)", owned.id, path.name)
                changed = True
        st.duplicates &= set(st.files)
        st.cyclic &= set(st.files)
        return changed, freed

    def _problems(self, dag: DagSpec) -> tuple[list[Problem], bool]:
        """What is wrong with a DAG that parsed, given this process and its configuration:
        an executor not configured (the DAG's own key once, then each step that names its
        own), then step by step a `call` target that cannot be called. Second: whether there
        are problems and all are worth a cheap look at the next reload (modules that are not
        installed)."""
        file = dag.source or dag.id
        problems: list[Problem] = []
        cheap = True
        executors = self._executors
        # An executor name that is not configured is reported where it is written: the DAG's
        # key once (when some step uses it), not at each step that inherits it.
        unknown: list[tuple[str, str | None]] = []
        # Run steps (sub-DAGs) are carried out by the daemon itself (executor "dag").
        runnable = [
            *(step for step in dag.steps.values() if step.run is None),
            *(h for h in dag.handlers.values() if not h.notify),
        ]
        if executors is not None:
            inherited = any(step.executor == dag.executor for step in runnable)
            if inherited and dag.executor not in executors:
                unknown.append((dag.executor, None))
            for step in runnable:
                if step.executor not in executors and step.executor != dag.executor:
                    unknown.append((step.executor, _where(step)))
        for name, step_id in unknown:
            problems.append(Problem(file, unconfigured(name, executors or ()), step_id, "executor"))
            cheap = False
        for step in runnable:
            if executors is not None and step.executor not in executors:
                continue  # it cannot run here: its module is not looked at
            if step.call is None or step.executor != DEFAULT_EXECUTOR:
                continue
            found = call_problem(step.call)
            if found is not None:
                problems.append(Problem(file, found.message, _where(step), "call"))
                cheap = cheap and found.cheap
        if self._pools is not None:
            for step in dag.steps.values():
                message = pool_problem(step, self._pools)
                if message is not None:
                    problems.append(Problem(file, message, step.id, "pool"))
                    cheap = False
        for handler in dag.handlers.values():
            for i, url in enumerate(handler.notify, start=1):
                message = url_problem(url)
                if message is not None:
                    problems.append(Problem(file, f"URL {i}: {message}", _where(handler), "notify"))
                    cheap = False
        return problems, cheap and bool(problems)

    def _refuse(
        self,
        st: _State,
        path: Path,
        stamp: Stamp | None,
        old_id: str | None,
        problems: list[Problem],
        duplicate: bool = False,
        *,
        kept: bool = True,
    ) -> Refused:
        """A file that cannot be used: its last good version (if any) stays, unless `kept`
        is False (its DAG id went to a file with a better claim)."""
        st.files[path] = _File(stamp, old_id)
        st.cyclic.discard(path)
        if duplicate:
            st.duplicates.add(path)
        else:
            st.duplicates.discard(path)
        st.problems[str(path)] = problems
        refused = Refused(path, old_id or path.stem, problems)
        if self._log:
            # Only a DAG this file loaded before, and still gives, has a version to keep.
            loaded = st.dags.get(old_id) if old_id is not None else None
            if not kept:
                keeping = ""
            elif loaded is not None and str(loaded.source) == str(path):
                keeping = " (keeping the last good version)"
            else:
                keeping = " (the DAG is not loaded)"
            self._log.error("cannot load DAG file%s:\n%s", keeping, refused.text)
        return refused


def pool_problem(step: StepSpec, pools: Mapping[str, int]) -> str | None:
    """Why `step` cannot take slots of its pool given the configured `pools` (name ->
    slots): the pool is not configured (with the configured name it may be a typo of), or
    `pool_slots` is more than the pool has. None: it can (or it names no pool)."""
    name = step.pool
    if name is None:
        return None
    size = pools.get(name)
    if size is None:
        close = difflib.get_close_matches(name, list(pools), n=1, cutoff=0.6)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(pools)) or "none (add them under [pools] in config.toml)"
        return f"no pool {name!r} is configured{guess}; configured: {known}"
    if step.pool_slots > size:
        return f"pool_slots {step.pool_slots} is more than pool {name!r} has ({size})"
    return None


def load_dag_folder(
    folder: Path,
    executors: Collection[str] | None = None,
    pools: Mapping[str, int] | None = None,
) -> DagFolder:
    """One read of `folder`, as `dagd validate`, `list` and `run` see it; `executors` and
    `pools` as for `DagFolder`. The links between its DAGs are checked too (dagd/core/
    dagrefs.py: `run` and `after` naming DAGs that are not there, or forming a cycle): a
    problem of each DAG's file. Unlike the daemon's reload, a missing folder is a problem here
    (the user named it)."""
    loaded = DagFolder(folder, executors=executors, pools=pools)
    if folder.is_dir():
        loaded.reload()
        for dag_id, found in link_problems(loaded.dags).items():
            dag = loaded.dags[dag_id]
            file = dag.source or dag_id
            loaded.problems.setdefault(file, []).extend(
                Problem(file, message, step, field) for message, step, field in found
            )
    else:
        problem = Problem(str(folder), "DAG folder does not exist (set dags_dir or --dags)")
        loaded.problems[str(folder)] = [problem]
    return loaded
