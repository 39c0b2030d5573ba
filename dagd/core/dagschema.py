"""The DAG file format as a JSON Schema (draft 2020-12), for editors and other tools.

Generated from the declarations the loader reads files by (`DAG_TABLE`, `STEP_TABLE` and their
kinds in spec.py), not kept by hand: a key added there appears here. The schema says what JSON
Schema can say; the loader checks more (a cron expression's fields, whether a time zone exists,
unknown dependencies and cycles, `$` syntax in `env`, params whose names differ only in case),
so a file the schema accepts may still have problems, and `dagd validate` is the last word.
Editors (taplo / Even Better TOML) read it as docs/dags.md shows; `dagd schema` prints it.
"""

from __future__ import annotations

import re
from typing import Any, assert_never

from dagd.core.model import HandlerKind
from dagd.core.spec import (
    DAG_TABLE,
    HANDLER_TABLE,
    ID_RE,
    INT64,
    MAX_DURATION,
    MAX_URLS,
    ONE_OF_HANDLER_KEYS,
    ONE_OF_STEP_KEYS,
    PARAM_RE,
    STEP_TABLE,
    Choice,
    Command,
    Duration,
    Flag,
    Handlers,
    InlineTable,
    Integer,
    Key,
    Kind,
    Labels,
    Names,
    Number,
    StepIds,
    Steps,
    Text,
    Urls,
)

#: The JSON Schema dialect of `dag_json_schema()`.
DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: What `parse_duration` reads from a string: a plain number of seconds ("42", "1.5"), or
#: numbers each with a unit (ms, s, m, h, d) one after another ("1h 30m"). (The loader also
#: takes what Python's float() reads, such as "1e3": the schema leaves such oddities out.)
DURATION_PATTERN = r"^ *(?:[0-9]+(?:\.[0-9]+)?|(?:[0-9]+(?:\.[0-9]+)? *(?:ms|s|m|h|d) *)+) *$"
_NO_NUL = "^[^\u0000]*$"
_NOT_BLANK = r"\S"


def _pattern(regex: re.Pattern[str]) -> str:
    """A Python regex of spec.py as a JSON Schema pattern: `\\Z` (end of text) becomes `$`."""
    return regex.pattern.removesuffix(r"\Z") + "$"


def _kind_schema(kind: Kind) -> dict[str, Any]:
    """The JSON Schema of one kind of value."""
    match kind:
        case Text():
            schema: dict[str, Any] = {"type": "string"}
            patterns = [_pattern(kind.pattern)] if kind.pattern is not None else []
            if not kind.nul:
                patterns.append(_NO_NUL)
            if len(patterns) == 1:
                schema["pattern"] = patterns[0]
            elif patterns:
                schema["allOf"] = [{"pattern": p} for p in patterns]
            return schema
        case Flag():
            return {"type": "boolean"}
        case Integer():
            return {"type": "integer", "minimum": kind.low, "maximum": kind.high}
        case Number():
            return {"type": "number", "minimum": kind.low, "maximum": kind.high}
        case Duration():
            seconds: dict[str, Any] = {"type": "number", "maximum": MAX_DURATION}
            seconds["exclusiveMinimum" if kind.positive else "minimum"] = 0
            return {"anyOf": [seconds, {"type": "string", "pattern": DURATION_PATTERN}]}
        case Choice():
            return {"enum": list(kind.choices)}
        case Command():
            line = {"type": "string", "allOf": [{"pattern": _NOT_BLANK}, {"pattern": _NO_NUL}]}
            argv = {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _NO_NUL}}
            return {"anyOf": [line, argv]}
        case StepIds():
            return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        case Names():
            value = {
                "anyOf": [
                    {"type": "string", "pattern": _NO_NUL},
                    {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]},
                    {"type": "number", "not": {"type": "integer"}},
                    {"type": "boolean"},
                ]
            }
            return {
                "type": "object",
                "propertyNames": {"pattern": _pattern(PARAM_RE)},
                "additionalProperties": value,
            }
        case Labels():
            return {"type": "array", "items": {"type": "string"}}
        case Steps():
            step = _table_schema(STEP_TABLE)
            step["oneOf"] = [{"required": [name]} for name in ONE_OF_STEP_KEYS]
            return {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": _pattern(ID_RE)},
                "additionalProperties": step,
            }
        case Urls():
            url = {"type": "string", "allOf": [{"pattern": _NOT_BLANK}, {"pattern": _NO_NUL}]}
            return {"type": "array", "minItems": 1, "maxItems": MAX_URLS, "items": url}
        case Handlers():
            handler = _table_schema(HANDLER_TABLE)
            handler["oneOf"] = [{"required": [name]} for name in ONE_OF_HANDLER_KEYS]
            return {
                "type": "object",
                "properties": {kind.value: handler for kind in HandlerKind},
                "additionalProperties": False,
            }
        case InlineTable():
            return _table_schema(kind.keys)
    assert_never(kind)


def _key_schema(key: Key) -> dict[str, Any]:
    schema = {"description": key.description, **_kind_schema(key.kind)}
    if key.default is not None:
        schema["default"] = key.default
    return schema


def _table_schema(keys: dict[str, Key]) -> dict[str, Any]:
    """A table whose keys are exactly `keys` (any other is an error, as in the loader)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _key_schema(key) for name, key in keys.items()},
        "additionalProperties": False,
    }
    required = [name for name, key in keys.items() if key.required]
    if required:
        schema["required"] = required
    return schema


def dag_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a DAG file, as a JSON-able dict: the top-level keys,
    and each `[steps.<id>]` table inlined (no `$ref`, so every validator reads it). A new
    dict each call."""
    return {
        "$schema": DIALECT,
        "title": "dagd DAG file",
        "description": "One DAG of dagd: its schedule, params, env and steps (docs/dags.md).",
        **_table_schema(DAG_TABLE),
    }


__all__ = ["DIALECT", "DURATION_PATTERN", "dag_json_schema"]
