"""Reading a folder of DAG files: every good DAG, and every problem of every bad file.

One broken file never hides the others: the caller gets the DAGs that loaded and the problems of
the rest, each naming its file.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from dagd.core.model import DagSpec
from dagd.core.spec import DagSpecError, Problem, parse_dag


@attrs.frozen
class DagFolder:
    dags: dict[str, DagSpec]
    problems: dict[str, list[Problem]]  # by file path
    mtimes: dict[str, float] = attrs.field(factory=dict)  # by file path, to notice edits

    @property
    def ok(self) -> bool:
        return not self.problems


def dag_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def load_dag_file(path: Path) -> DagSpec:
    """Parse one file; raises DagSpecError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DagSpecError([Problem(str(path), f"cannot read file: {exc}")]) from None
    return parse_dag(text, str(path), default_id=path.stem)


def load_dag_folder(folder: Path) -> DagFolder:
    if not folder.is_dir():
        problem = Problem(str(folder), "DAG folder does not exist (set dags_dir or --dags)")
        return DagFolder({}, {str(folder): [problem]})
    dags: dict[str, DagSpec] = {}
    problems: dict[str, list[Problem]] = {}
    mtimes: dict[str, float] = {}
    for path in dag_files(folder):
        key = str(path)
        try:
            mtimes[key] = path.stat().st_mtime
            dag = load_dag_file(path)
        except DagSpecError as exc:
            problems[key] = exc.problems
            continue
        except OSError as exc:
            problems[key] = [Problem(key, f"cannot read file: {exc}")]
            continue
        if dag.id in dags:
            other = dags[dag.id].source
            problems[key] = [
                Problem(key, f"DAG id {dag.id!r} is already used by {other}", field="id")
            ]
            continue
        dags[dag.id] = dag
    return DagFolder(dags, problems, mtimes)
