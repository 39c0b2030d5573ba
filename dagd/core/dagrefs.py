"""Links between DAGs: a sub-DAG step's `run` and its params' references, and a DAG's `after`.

- A run step's params may hold `${params.<name>}` (a param of the parent run) and
  `${outputs.<step>.<key>}` (an output of a step upstream of it); `$$` is one `$`. Values are
  filled in when the step's attempt triggers its child run (`fill_params`).
- Across the DAG folder (`link_problems`; `link_cycles` for the cycles alone): every `run`
  and `after` must name a loaded DAG, the params a run step gives must be declared by its
  child DAG, and the links must not form a cycle. A link X -> Y means "a run of X may cause
  a run of Y": X has a step `run = "Y"`, or Y has `after = ["X"]`. A cycle (a runs b runs a;
  a runs b, a after b) would never end.

Pure: values in, values out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dagd.core.graph import find_cycle
from dagd.core.model import DagSpec, StepSpec

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_STEP = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
#: `$$`, or `${params.<name>}`, or `${outputs.<step>.<key>}` (a key is a param-like name).
_REFERENCE = re.compile(
    rf"\$\$|\$\{{params\.({_NAME})\}}|\$\{{outputs\.({_STEP})\.({_NAME})\}}|\$\{{|\$"
)


def _references(value: str) -> list[tuple[str, str, str]]:
    """("params", name, "") and ("outputs", step, key) for each reference in `value`;
    ("bad", text, "") for a `$` that starts none (the caller reports it)."""
    found: list[tuple[str, str, str]] = []
    for match in _REFERENCE.finditer(value):
        text = match[0]
        if text == "$$":
            continue
        if match[1] is not None:
            found.append(("params", match[1], ""))
        elif match[2] is not None:
            found.append(("outputs", match[2], match[3]))
        else:
            found.append(("bad", value[match.start() : match.start() + 24], ""))
    return found


def reference_problem(value: str) -> str | None:
    """Why a run step's param value has a `$` that is no reference, or None."""
    for kind, text, _ in _references(value):
        if kind == "bad":
            return (
                f"cannot read {text!r}: write ${{params.<name>}}, ${{outputs.<step>.<key>}} "
                "or $$ for one $"
            )
    return None


def step_references(step: StepSpec) -> list[tuple[str, str, str]]:
    """The references of a run step's params (see `_references`; well-formed ones only)."""
    return [
        ref for value in step.run_params.values() for ref in _references(value) if ref[0] != "bad"
    ]


def upstream_of(steps: Mapping[str, StepSpec], step_id: str) -> set[str]:
    """Every step `step_id` depends on, directly or through others (ids not in `steps` are
    left out)."""
    seen: set[str] = set()
    todo = list(steps[step_id].depends_on) if step_id in steps else []
    while todo:
        up = todo.pop()
        if up in seen or up not in steps:
            continue
        seen.add(up)
        todo.extend(steps[up].depends_on)
    return seen


def fill_params(
    values: Mapping[str, str],
    params: Mapping[str, str],
    outputs: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """A run step's params with their references replaced: `${params.x}` by the run's param,
    `${outputs.s.k}` by the output (a string as it is, another JSON value as JSON text).
    Raises ValueError naming the reference for an output the upstream step did not give
    (a param is always there: the DAG file check makes sure it is declared)."""
    filled: dict[str, str] = {}
    for name, value in values.items():
        if "$" not in value:
            filled[name] = value
            continue

        def replace(match: re.Match[str], name: str = name) -> str:
            if match[0] == "$$":
                return "$"
            if match[1] is not None:
                return params.get(match[1], "")
            if match[2] is not None:
                given = outputs.get(match[2], {})
                if match[3] not in given:
                    raise ValueError(
                        f"param {name!r}: step {match[2]!r} gave no output {match[3]!r}"
                    )
                out = given[match[3]]
                if isinstance(out, str):
                    return out
                return json.dumps(out)
            return match[0]

        filled[name] = _REFERENCE.sub(replace, value)
    return filled


def links(dags: Mapping[str, DagSpec]) -> dict[str, set[str]]:
    """X -> the DAGs a run of X may cause runs of (its run steps' DAGs, and the DAGs that run
    after it), over the DAGs given (links to unknown ids included)."""
    out: dict[str, set[str]] = {dag_id: set() for dag_id in dags}
    for dag in dags.values():
        for step in dag.steps.values():
            if step.run is not None:
                out[dag.id].add(step.run)
        for upstream in dag.after:
            out.setdefault(upstream, set()).add(dag.id)
    return out


def link_problems(dags: Mapping[str, DagSpec]) -> dict[str, list[tuple[str, str | None, str]]]:
    """What is wrong with the links between `dags` (by DAG id): for each DAG, a list of
    (message, step id or None, field) for a `run` or `after` naming a DAG that is not there,
    a run step's param its child DAG does not declare, and a cycle of links through it."""
    problems: dict[str, list[tuple[str, str | None, str]]] = {}

    def add(dag_id: str, message: str, step: str | None, field: str) -> None:
        problems.setdefault(dag_id, []).append((message, step, field))

    known = ", ".join(sorted(dags)) or "none"
    for dag in dags.values():
        for step in dag.steps.values():
            if step.run is None:
                continue
            child = dags.get(step.run)
            if child is None:
                add(dag.id, f"no DAG {step.run!r} (DAGs: {known})", step.id, "run")
                continue
            for name in step.run_params:
                if name not in child.params:
                    declared = ", ".join(sorted(child.params)) or "none"
                    add(
                        dag.id,
                        f"DAG {child.id!r} has no param {name!r} (declared params: {declared})",
                        step.id,
                        "params",
                    )
        for upstream in dag.after:
            if upstream not in dags:
                add(dag.id, f"no DAG {upstream!r} (DAGs: {known})", None, "after")
    for cycle in link_cycles(dags):
        path = " -> ".join(cycle)
        for dag_id in dict.fromkeys(cycle):
            dag = dags[dag_id]
            at = next(
                (s.id for s in dag.steps.values() if s.run is not None and s.run in cycle), None
            )
            field = "run" if at is not None else "after"
            add(dag_id, f"DAGs cause each other's runs in a cycle: {path}", at, field)
    return problems


def link_cycles(dags: Mapping[str, DagSpec]) -> list[list[str]]:
    """The cycles of links between `dags`, each a closed path `[a, b, a]`; each DAG in at most
    one of them (a DAG on several cycles is reported with the first found)."""
    graph = {
        dag_id: tuple(sorted(t for t in targets if t in dags))
        for dag_id, targets in links(dags).items()
        if dag_id in dags
    }
    cycles: list[list[str]] = []
    reported: set[str] = set()
    while True:
        rest = {d: tuple(t for t in ts if t not in reported) for d, ts in graph.items()}
        rest = {d: ts for d, ts in rest.items() if d not in reported}
        cycle = find_cycle(rest)
        if not cycle:
            return cycles
        cycles.append(cycle)
        reported.update(cycle)
