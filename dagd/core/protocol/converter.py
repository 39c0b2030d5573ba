"""The one cattrs converter of the protocol, built in one function: every request, answer and
DAG event class, both directions.

What it does for every class: camelCase field names on the wire (`camel`), times as ISO 8601
UTC text with milliseconds (the fields named in `TIME_FIELDS`), `requestId` left out when
None. Structuring is strict: wrong types are not coerced ("5" is not 5, "abc" is not
["a", "b", "c"], 1.0 is not 1), extra keys are refused, missing ones are errors.

Requests and answers unstructure to the whole wire object, `type` first
(`{"type": "pong", "timestamp": ...}`), and structure from it (a wrong `type` is an error).
DAG events unstructure to their `data` object only: `dagd.core.protocol.events` puts the
envelope (`type`, `seq`) around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from dagd.core.events import EVENT_TYPES
from dagd.core.logslice import LogStream
from dagd.core.model import HandlerKind, RunStatus, StepStatus, TriggerRule
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    ANSWER_TYPES,
    BackfillAction,
    BackfillSlot,
    BrokenFile,
    DagSummary,
    Edge,
    Error,
    FileProblem,
    LogEndReason,
    StepDefinition,
    StepDetail,
    TriggerKind,
)
from dagd.core.protocol.codes import ErrorCode, Role
from dagd.core.protocol.requests import MAX_PARAM_NAME, MAX_REQUEST_ID, REQUEST_TYPES, RequestId
from dagd.core.records import AttemptRecord, RunRecord
from dagd.core.timefmt import iso_z, parse_iso

Hook = Callable[[Any, Any], Any]

#: Fields that hold UNIX seconds here and ISO 8601 UTC text (`...T12:00:00.123Z`) on the wire.
TIME_FIELDS = frozenset(
    {
        "timestamp",
        "start_time",
        "end_time",
        "next_run",
        "queued_at",
        "started_at",
        "ended_at",
        "slot",
    }
)
#: Event fields that are not on the wire: `seq` lives beside `data`; `attempt` is dagd's own;
#: `outputs` go to the store (and `get_run`), not to every subscriber.
_EVENT_OFF_WIRE = frozenset({"seq", "attempt", "outputs"})
#: Optional fields left off the wire while they are None (their default).
_OMIT_WHEN_NONE = frozenset(
    {
        "worker",
        "handler",
        "notify",
        "waiting_for",
        "parent_run_id",
        "triggered_by",
        "precondition",
        "wait_for",
        "run",
        "run_params",
    }
)
_Scalar = str | int | float | bool


def camel(name: str) -> str:
    """`dag_ids` -> `dagIds`: a field's name on the wire."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _show(value: Any) -> str:
    return json.dumps(value)[:40]


def _time_out(value: float | None) -> str | None:
    return None if value is None else iso_z(value)


def _time_in(value: Any, _type: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {_show(value)}")
    return parse_iso(value)


def _strict(kind: type, label: str) -> Hook:
    def hook(value: Any, _type: object) -> Any:
        if type(value) is not kind:
            raise ValueError(f"expected {label}, got {_show(value)}")
        return value

    return hook


def _number(value: Any, _type: object) -> Any:
    if type(value) not in (int, float):
        raise ValueError(f"expected a number, got {_show(value)}")
    return value


def _scalar(value: Any, _type: object) -> Any:
    if type(value) not in (str, int, float, bool):
        raise ValueError(f"expected a string, number or boolean, got {_show(value)}")
    return value


def _enum(kind: type[Any]) -> Hook:
    def hook(value: Any, _type: object) -> Any:
        if not isinstance(value, str):  # a str from JSON, or the enum itself (unstructured)
            raise ValueError(f"expected a string, got {_show(value)}")
        return kind(value)

    return hook


def _request_id(value: Any, _type: object) -> RequestId:
    if value is not None and type(value) not in (str, int):
        raise ValueError("requestId must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_REQUEST_ID:
        raise ValueError(f"requestId is longer than {MAX_REQUEST_ID} characters")
    return value  # type: ignore[no-any-return]  # checked: str, int or None


def _params(value: Any, _type: object) -> dict[str, _Scalar]:
    if type(value) is not dict:
        raise ValueError("params must be an object of name: value")
    for name, item in value.items():
        _scalar(item, None)
        if len(name) > MAX_PARAM_NAME:
            raise ValueError(f"param names are at most {MAX_PARAM_NAME} characters")
    return value


def _command(value: Any, _type: object) -> str | list[str] | None:
    if value is None or type(value) is str:
        return value
    if type(value) is list and all(type(v) is str for v in value):
        return value
    raise ValueError(f"expected a string, a list of strings or null, got {_show(value)}")


def _str_dict(value: Any, _type: object) -> dict[str, str]:
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise ValueError("expected an object of name: string")
    return value


def _log_stream(value: Any, _type: object) -> LogStream:
    if value == "out":
        return "out"
    if value == "err":
        return "err"
    raise ValueError(f"expected 'out' or 'err', got {_show(value)}")


def _list_hook(conv: cattrs.Converter) -> Callable[[Any], Hook]:
    """Lists are JSON arrays, nothing else (a string or an object is not a list)."""

    def factory(list_type: Any) -> Hook:
        (item_type,) = get_args(list_type)
        item = conv.get_structure_hook(item_type)

        def hook(value: Any, _type: object) -> list[Any]:
            if type(value) is not list:
                raise ValueError(f"expected a list, got {_show(value)}")
            return [item(v, item_type) for v in value]

        return hook

    return factory


def _is_list(t: Any) -> bool:
    origin: object = get_origin(t)
    return origin is list


def _tagged(name: str, unstructure: Callable[[Any], dict[str, Any]]) -> Callable[[Any], Any]:
    def hook(message: Any) -> dict[str, Any]:
        return {"type": name, **unstructure(message)}

    return hook


def _untagged(name: str, structure: Hook) -> Hook:
    def hook(value: Any, cls: Any) -> Any:
        if type(value) is not dict:
            raise ValueError(f"a {name} message must be a JSON object")
        fields = dict(value)
        kind = fields.pop("type", None)
        if kind != name:
            raise ValueError(f"expected type {name!r}, got {_show(kind)}")
        return structure(fields, cls)

    return hook


def _overrides(cls: type, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """camelCase names, ISO times, `omit` left out, a None `requestId` left out."""
    result: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name in omit:
            result[field.name] = override(omit=True)
        elif field.name in TIME_FIELDS:
            result[field.name] = override(
                rename=camel(field.name), unstruct_hook=_time_out, struct_hook=_time_in
            )
        elif field.name == "request_id":
            result[field.name] = override(rename="requestId", omit_if_default=True)
        elif field.name in _OMIT_WHEN_NONE:
            result[field.name] = override(rename=camel(field.name), omit_if_default=True)
        else:
            result[field.name] = override(rename=camel(field.name))
    return result


# cattrs' generators take the overrides as **kwargs beside their own keyword arguments, which
# mypy cannot tell apart: call them through these untyped names.
_make_structure: Callable[..., Hook] = make_dict_structure_fn
_make_unstructure: Callable[..., Callable[[Any], dict[str, Any]]] = make_dict_unstructure_fn


def _error_unstructure(inner: Callable[[Any], dict[str, Any]]) -> Callable[[Any], Any]:
    def hook(error: Error) -> dict[str, Any]:
        wire = inner(error)
        if error.code is not ErrorCode.REPLAY_UNAVAILABLE:
            del wire["oldestSeq"]  # only replay_unavailable carries it, null included
        return {"type": "error", **wire}

    return hook


def make_converter() -> cattrs.Converter:
    """The protocol's converter: strict primitives, then the hooks of every message class."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(float, _number)
    conv.register_structure_hook(_Scalar, _scalar)
    conv.register_structure_hook(RequestId, _request_id)
    # Explicit hooks: a StrEnum is a str, and would otherwise reach the strict `str` hook.
    enums = (ErrorCode, Role, RunStatus, StepStatus, TriggerRule, TriggerKind, BackfillAction)
    for kind in (*enums, LogEndReason, HandlerKind):
        conv.register_structure_hook(kind, _enum(kind))
    conv.register_structure_hook_func(lambda t: t == (str | list[str] | None), _command)
    conv.register_structure_hook_func(lambda t: t == dict[str, _Scalar], _params)
    conv.register_structure_hook_func(lambda t: t == dict[str, str], _str_dict)
    conv.register_structure_hook_func(lambda t: t == LogStream, _log_stream)
    conv.register_structure_hook_factory(_is_list, _list_hook(conv))

    for event_cls in EVENT_TYPES:
        overrides = _overrides(event_cls, omit=_EVENT_OFF_WIRE)
        conv.register_unstructure_hook(event_cls, _make_unstructure(event_cls, conv, **overrides))
        conv.register_structure_hook(event_cls, _make_structure(event_cls, conv, **overrides))

    # The entries of answers: `dags` (and its broken files), `runs`, `dag`, `run`,
    # `backfill_result` and `pools`; a class
    # before any class that holds it (a generated hook takes its fields' hooks as they are).
    plain: tuple[type, ...] = (
        DagSummary,
        RunRecord,
        AttemptRecord,
        StepDefinition,
        Edge,
        StepDetail,
        BackfillSlot,
        FileProblem,
        BrokenFile,
        PoolUsage,
    )
    for plain_cls in plain:
        overrides = _overrides(plain_cls)
        conv.register_unstructure_hook(plain_cls, _make_unstructure(plain_cls, conv, **overrides))
        conv.register_structure_hook(plain_cls, _make_structure(plain_cls, conv, **overrides))

    messages: dict[type, str] = {**REQUEST_TYPES, **ANSWER_TYPES}
    for cls, name in messages.items():
        overrides = _overrides(cls)
        # A request leaves out every field at its default (the daemon fills them in).
        omit_defaults = cls in REQUEST_TYPES
        unstructure = _make_unstructure(
            cls, conv, _cattrs_omit_if_default=omit_defaults, **overrides
        )
        if cls is Error:
            conv.register_unstructure_hook(cls, _error_unstructure(unstructure))
        else:
            conv.register_unstructure_hook(cls, _tagged(name, unstructure))
        structure = _make_structure(cls, conv, **overrides)
        conv.register_structure_hook(cls, _untagged(name, structure))
    return conv


#: The protocol's converter (see `make_converter`).
converter = make_converter()
