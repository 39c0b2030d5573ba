"""A DAG definition as stored with each run: DagSpec <-> JSON text, and its version.

Why JSON of the DagSpec, not the file's TOML text: a run must rerun (retry) and be closed out
(recovery) with exactly what it was triggered with, after any restart and any upgrade of dagd.
The TOML text would have to be parsed again, by whatever parser and environment dagd has then
(a later dagd may refuse a key, or read `[env]` differently); the parsed value is what the run
actually used. The JSON is made generically from the attrs classes (cattrs), so a field added
to `DagSpec` or `StepSpec` is stored without a change here, and a field with a default that an
old snapshot lacks reads back as that default.

The version is the SHA-256 of that JSON in hex: it changes when the meaning changes (a
command, a step, a limit, the file's path), not for comments or formatting. Show the first
`SHORT_VERSION` digits to people.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import cattrs

from dagd.core.model import DagSpec

#: Hex digits of a version shown to people (`dagd runs`, logs).
SHORT_VERSION = 12

_Command = str | tuple[str, ...] | None


class SnapshotError(ValueError):
    """Stored definition text that is not a DAG definition (corrupt, or not one of dagd's)."""


def _structure_command(value: Any, _type: object) -> _Command:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return tuple(value)
    raise ValueError(f"a command is a string or a list of strings, not {value!r}")


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(_Command, _structure_command)
    return converter


_CONVERTER = _converter()


def dag_to_json(dag: DagSpec) -> str:
    """The definition as compact JSON text: every field of the DagSpec and its steps, steps in
    file order. The same DagSpec always gives the same text."""
    return json.dumps(_CONVERTER.unstructure(dag), separators=(",", ":"), ensure_ascii=False)


def dag_version(text: str) -> str:
    """The version of a definition's JSON text (`dag_to_json`): SHA-256, 64 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dag_from_json(text: str) -> DagSpec:
    """The DagSpec `dag_to_json` made `text` from. Raises SnapshotError for anything else
    (not JSON, a missing or unknown field, a wrong type)."""
    try:
        dag = _CONVERTER.structure(json.loads(text), DagSpec)
    except Exception as exc:  # any failure of the stored text is this one error
        raise SnapshotError(f"not a stored DAG definition: {exc!r}"[:500]) from None
    if (
        set(dag.order) != set(dag.steps)
        or any(up not in dag.steps for step in dag.steps.values() for up in step.depends_on)
        or any(h.handler is None or h.handler.step_id != sid for sid, h in dag.handlers.items())
    ):
        raise SnapshotError("not a stored DAG definition: its steps and their order disagree")
    return dag


__all__ = ["SHORT_VERSION", "SnapshotError", "dag_from_json", "dag_to_json", "dag_version"]
