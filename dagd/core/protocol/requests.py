"""Client -> server messages: parsing that refuses anything doubtful, with errors that teach.

Every message is a JSON object with a `type`; fields are camelCase on the wire. `requestId`
(a string or integer) may ride on any request and is echoed in its answer or error. Parsing is
strict: wrong types are not coerced ("5" is not 5, "abc" is not ["a", "b", "c"]), extra keys are
refused, and hostile JSON (NaN, 1e999, lone surrogates, 10,000 nested brackets) is an
`invalid_message`, never a crash.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

RequestId = str | int | None


class ProtocolError(Exception):
    """The peer sent something we cannot act on. `code` goes on the wire."""

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@attrs.frozen
class Auth:
    token: str
    request_id: RequestId = None


@attrs.frozen
class Subscribe:
    """Subscribe to more DAGs; with `since`, also replay from that seq, atomically (the replay
    and the live events that follow it are in seq order with nothing repeated)."""

    dag_ids: list[str]
    since: int | None = None
    request_id: RequestId = None


@attrs.frozen
class Unsubscribe:
    dag_ids: list[str]
    request_id: RequestId = None


@attrs.frozen
class Replay:
    since: int
    request_id: RequestId = None


@attrs.frozen
class Snapshot:
    request_id: RequestId = None


@attrs.frozen
class Trigger:
    dag_id: str
    params: dict[str, str | int | float | bool] = attrs.field(factory=dict)
    request_id: RequestId = None


@attrs.frozen
class Cancel:
    run_id: str
    request_id: RequestId = None


@attrs.frozen
class Retry:
    run_id: str
    request_id: RequestId = None


@attrs.frozen
class ListDags:
    request_id: RequestId = None


@attrs.frozen
class ListRuns:
    dag_id: str | None = None
    limit: int = 20
    request_id: RequestId = None


@attrs.frozen
class Ping:
    """An application-level ping; answered with `pong` (handy for clients without WS pings)."""

    request_id: RequestId = None


CLIENT_MESSAGES: dict[str, type] = {
    "auth": Auth,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "replay": Replay,
    "snapshot": Snapshot,
    "trigger": Trigger,
    "cancel": Cancel,
    "retry": Retry,
    "list_dags": ListDags,
    "list_runs": ListRuns,
    "ping": Ping,
}
#: Requests that change something: they need the `operate` role.
CONTROL = (Trigger, Cancel, Retry)
MAX_LIST_LIMIT = 1000
MAX_DAG_IDS = 10_000


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _strict(kind: type, label: str):
    def hook(value: Any, _: object) -> Any:
        if type(value) is not kind:
            raise ValueError(f"expected {label}, got {json.dumps(value)[:40]}")
        return value

    return hook


def _number(value: Any, _: object) -> Any:
    if type(value) not in (int, float):
        raise ValueError(f"expected a number, got {json.dumps(value)[:40]}")
    return value


def _scalar(value: Any, _: object) -> Any:
    if type(value) not in (str, int, float, bool):
        raise ValueError(f"expected a string, number or boolean, got {json.dumps(value)[:40]}")
    return value


def _request_id(value: Any, _: object) -> RequestId:
    if value is not None and type(value) not in (str, int):
        raise ValueError("requestId must be a string or an integer")
    if isinstance(value, str) and len(value) > 200:
        raise ValueError("requestId is longer than 200 characters")
    return value


def _str_list(value: Any, _: object) -> list[str]:
    if type(value) is not list or not all(type(v) is str for v in value):
        raise ValueError("expected a list of strings")
    return value


def _params(value: Any, _: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise ValueError("params must be an object of name: value")
    for name, item in value.items():
        _scalar(item, None)
        if len(name) > 200:
            raise ValueError("param names are at most 200 characters")
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(float, _number)
    conv.register_structure_hook(str | int | float | bool, _scalar)
    conv.register_structure_hook(RequestId, _request_id)
    conv.register_structure_hook_func(lambda t: t == list[str], _str_list)
    conv.register_structure_hook_func(lambda t: t == dict[str, str | int | float | bool], _params)
    for cls in CLIENT_MESSAGES.values():
        overrides = {f.name: override(rename=_camel(f.name)) for f in attrs.fields(cls)}
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides)
        )
    return conv


converter = _make_converter()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads_strict(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, overflowing numbers and lone surrogates."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_check_float)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if _SURROGATE_ESCAPE.search(text):  # rare: only then pay for the full check
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text contains a lone surrogate (invalid Unicode)") from None
    return value


_FIELD_PATH = re.compile(r"\.([a-z]+(?:_[a-z]+)+)")


def _describe(exc: Exception) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        messages = []
        for line in cattrs.transform_error(exc, path="message"):
            messages.append(_FIELD_PATH.sub(lambda m: "." + _camel(m[1]), line))
        return "; ".join(messages)
    return str(exc)


def parse_client_message(text: str | bytes) -> object:
    """A text frame -> one of the message classes above, or ProtocolError."""
    if isinstance(text, bytes):
        raise ProtocolError("invalid_message", "binary frames are not accepted; send JSON text")
    try:
        raw = loads_strict(text)
    except ValueError as exc:
        raise ProtocolError("invalid_message", str(exc)) from None
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_message", "a message must be a JSON object with a 'type'")
    request_id = raw.get("requestId")
    if type(request_id) not in (str, int) or (
        isinstance(request_id, str) and len(request_id) > 200
    ):
        request_id = None
    kind = raw.pop("type", None)
    if kind is None:
        raise ProtocolError("invalid_message", "missing 'type'", request_id)
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "'type' must be a string", request_id)
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        known = ", ".join(CLIENT_MESSAGES)
        raise ProtocolError(
            "unknown_type", f"unknown type {kind[:40]!r} (known: {known})", request_id
        )
    try:
        message = converter.structure(raw, cls)
    except Exception as exc:  # cattrs raises several kinds; all mean "bad fields"
        raise ProtocolError("invalid_message", f"{kind}: {_describe(exc)}", request_id) from None
    _check_values(message)
    return message


def _check_values(message: object) -> None:
    rid = getattr(message, "request_id", None)
    if isinstance(message, Subscribe | Unsubscribe):
        if not message.dag_ids:
            raise ProtocolError("invalid_message", "dagIds must be a non-empty list", rid)
        if len(message.dag_ids) > MAX_DAG_IDS:
            raise ProtocolError("invalid_message", f"at most {MAX_DAG_IDS} dagIds", rid)
    if isinstance(message, Replay | Subscribe) and (message.since or 0) < 0:
        raise ProtocolError("invalid_message", "since must be >= 0", rid)
    elif isinstance(message, ListRuns) and not 1 <= message.limit <= MAX_LIST_LIMIT:
        raise ProtocolError("invalid_message", f"limit must be 1..{MAX_LIST_LIMIT}", rid)
