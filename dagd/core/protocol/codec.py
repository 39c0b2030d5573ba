"""Messages to wire text and back, both directions.

    encode(Ping(request_id=7))            -> '{"type":"ping","requestId":7}'
    parse_client_message('{"type":"ping"}') -> Ping()
    parse_server_message('{"type":"pong","timestamp":"..."}') -> Pong(...)

`parse_client_message` is the server's strict door: anything doubtful is a `ProtocolError`
whose message teaches what was wrong. `parse_server_message` is the client's: it knows every
answer and DAG event.
"""

from __future__ import annotations

import re
from typing import Any

import cattrs

from dagd.core.events import DagEvent
from dagd.core.protocol.answers import SERVER_ANSWERS, ServerAnswer
from dagd.core.protocol.codes import ErrorCode, ProtocolError
from dagd.core.protocol.converter import camel, converter
from dagd.core.protocol.events import TYPE_TO_EVENT, event_from_wire
from dagd.core.protocol.requests import (
    CLIENT_MESSAGES,
    MAX_DAG_IDS,
    MAX_LIST_LIMIT,
    MAX_REQUEST_ID,
    FollowLog,
    ListRuns,
    Replay,
    Request,
    RequestId,
    Subscribe,
    UnfollowLog,
    Unsubscribe,
)
from dagd.core.protocol.wire import dumps, loads_strict

Message = Request | ServerAnswer


def to_wire(message: Message) -> dict[str, Any]:
    """The JSON-ready dict of a request or answer, `type` first (see docs/protocol.md)."""
    wire: dict[str, Any] = converter.unstructure(message)
    return wire


def encode(message: Message) -> str:
    """A request or answer as compact JSON text, the text of one WebSocket text frame."""
    return dumps(to_wire(message))


_FIELD_PATH = re.compile(r"\.([a-z]+(?:_[a-z]+)+)")


def _describe(exc: Exception) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        messages = []
        for line in cattrs.transform_error(exc, path="message"):
            messages.append(_FIELD_PATH.sub(lambda m: "." + camel(m[1]), line))
        return "; ".join(messages)
    return str(exc)


def _readable_request_id(raw: dict[str, Any]) -> RequestId:
    """The `requestId` of a message that may not parse, if it is a valid one (else None)."""
    rid = raw.get("requestId")
    if type(rid) is int or (type(rid) is str and len(rid) <= MAX_REQUEST_ID):
        return rid  # checked above: a str or an int
    return None


def parse_client_message(text: str | bytes) -> Request:
    """A client's text frame -> one of the request classes.

    Raises ProtocolError with code `invalid_message` (binary frame, not JSON, hostile JSON,
    not an object, missing or non-string `type`, wrong, missing or extra fields, values out
    of range) or `unknown_type`; its `request_id` is the message's `requestId` when that could
    be read.
    """
    if isinstance(text, bytes):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "binary frames are not accepted; send JSON text"
        )
    try:
        raw = loads_strict(text)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, str(exc)) from None
    if not isinstance(raw, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "a message must be a JSON object with a 'type'"
        )
    request_id = _readable_request_id(raw)
    kind = raw.get("type")
    if kind is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "missing 'type'", request_id)
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "'type' must be a string", request_id)
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        known = ", ".join(CLIENT_MESSAGES)
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown type {kind[:40]!r} (known: {known})", request_id
        )
    try:
        message: Request = converter.structure(raw, cls)
    except Exception as exc:  # cattrs raises several kinds; all mean "bad fields"
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"{kind}: {_describe(exc)}", request_id
        ) from None
    _check_values(message)
    return message


def _check_values(message: Request) -> None:
    """Limits the types cannot say: non-empty id lists, seqs >= 0, list_runs' limit."""
    rid = message.request_id
    invalid = ErrorCode.INVALID_MESSAGE
    if isinstance(message, Subscribe | Unsubscribe):
        if not message.dag_ids:
            raise ProtocolError(invalid, "dagIds must be a non-empty list", rid)
        if len(message.dag_ids) > MAX_DAG_IDS:
            raise ProtocolError(invalid, f"at most {MAX_DAG_IDS} dagIds", rid)
    if isinstance(message, Replay | Subscribe) and (message.since or 0) < 0:
        raise ProtocolError(invalid, "since must be >= 0", rid)
    elif isinstance(message, ListRuns) and not 1 <= message.limit <= MAX_LIST_LIMIT:
        raise ProtocolError(invalid, f"limit must be 1..{MAX_LIST_LIMIT}", rid)
    elif isinstance(message, FollowLog | UnfollowLog):
        if message.attempt is not None and message.attempt < 1:
            raise ProtocolError(invalid, "attempt must be >= 1", rid)
        if isinstance(message, FollowLog):
            if message.offset < 0 or (message.tail or 0) < 0:
                raise ProtocolError(invalid, "offset and tail must be >= 0", rid)
            if message.offset and message.tail is not None:
                raise ProtocolError(invalid, "give offset or tail, not both", rid)


def parse_server_message(text: str | bytes) -> ServerAnswer | DagEvent:
    """A server's text frame -> an answer object or a DAG event.

    A frame of type `error` with `data` is a DAG `ErrorEvent`; without, an `Error` answer.
    Raises ProtocolError `unknown_type` for a type this version does not know (a newer daemon
    may send more: a client can skip such frames), and ValueError for anything else that is
    not a valid server message (binary or invalid JSON, wrong fields).
    """
    if isinstance(text, bytes):
        raise ValueError("binary frame from the daemon")
    raw = loads_strict(text)
    if not isinstance(raw, dict):
        raise ValueError("a server message must be a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ValueError("a server message needs a string 'type'")
    try:
        if kind in TYPE_TO_EVENT and "data" in raw:
            return event_from_wire(raw)
        cls = SERVER_ANSWERS.get(kind)
        if cls is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown type {kind[:40]!r}")
        answer: ServerAnswer = converter.structure(raw, cls)
    except (cattrs.BaseValidationError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid {kind[:40]!r} message: {_describe(exc)}") from None
    return answer
