"""Wire encoding of DAG events: one cattrs converter, camelCase fields, ISO `Z` timestamps.

An event on the wire is `{"type": ..., "seq": ..., "data": {...}}` (seq only once the event log
has numbered it). Everything else about the protocol lives in the server-message modules; this
file is the single place that knows how an event looks as JSON.
"""

from __future__ import annotations

import json
import json.encoder
import struct
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from dagd.core.events import EVENT_TYPES, DagEvent
from dagd.core.timefmt import iso_z, parse_iso

_TIME_FIELDS = {"timestamp", "start_time", "end_time"}
TYPE_TO_EVENT: dict[str, type] = {name: cls for cls, name in EVENT_TYPES.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _time_out(value: float | None) -> str | None:
    return None if value is None else iso_z(value)


def _time_in(value: Any, _type: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {value!r}")
    return parse_iso(value)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for cls in EVENT_TYPES:
        overrides: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.name == "seq":
                overrides["seq"] = override(omit=True)  # lives beside `data`, not inside it
            elif field.name == "attempt":
                overrides["attempt"] = override(omit=True)  # ours, not the protocol's
            elif field.name in _TIME_FIELDS:
                overrides[field.name] = override(
                    rename=_camel(field.name),
                    unstruct_hook=_time_out,
                    struct_hook=_time_in,
                )
            else:
                overrides[field.name] = override(rename=_camel(field.name))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **overrides))
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides)
        )
    return conv


converter = _make_converter()


def event_to_wire(event: DagEvent) -> dict[str, Any]:
    """The JSON-ready dict for an event."""
    message: dict[str, Any] = {"type": EVENT_TYPES[type(event)]}
    if event.seq is not None:
        message["seq"] = event.seq
    message["data"] = converter.unstructure(event)
    return message


def _compact_json_encoder() -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"), ensure_ascii=False)` as one prebuilt encoder.

    `JSONEncoder.encode` builds its C encoder anew on every call; event data is plain dicts
    of strings and numbers, so one C encoder without the circularity check can serve every
    event (1 µs less each). Without the C accelerator, the plain encoder does the same job.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    iterencode = make(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return lambda value: "".join(iterencode(value, 0))


_encode_json = _compact_json_encoder()
_unstructure = {cls: converter.get_unstructure_hook(cls) for cls in EVENT_TYPES}
_type_prefix = {cls: '{"type":' + _encode_json(name) for cls, name in EVENT_TYPES.items()}


def encode_event(event: DagEvent) -> str:
    """The event as one compact JSON text (what goes in a WebSocket text frame).

    The same text as `json.dumps(event_to_wire(event), separators=(",", ":"),
    ensure_ascii=False)` (a test holds them equal), built in two thirds of the time: every event
    passes here once, and it was the daemon's largest cost per event. Only `data` goes
    through the JSON encoder (one encoder, made once); the envelope is plain text.
    """
    cls = type(event)
    data = _encode_json(_unstructure[cls](event))
    seq = event.seq
    if seq is None:
        return f'{_type_prefix[cls]},"data":{data}}}'
    return f'{_type_prefix[cls]},"seq":{int(seq)},"data":{data}}}'


def event_from_wire(message: dict[str, Any]) -> DagEvent:
    """Inverse of `event_to_wire`; raises on a message that is not a DAG event."""
    cls = TYPE_TO_EVENT[message["type"]]
    event = converter.structure(message["data"], cls)
    seq = message.get("seq")
    return attrs.evolve(event, seq=seq) if seq is not None else event


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2).

    A server's frames are not masked, so the bytes of an event's frame are the same for every
    client: the server builds them once per event and writes them to every socket as they are.
    """
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload
