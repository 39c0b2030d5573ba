"""JSON text on the wire: strict reading, compact writing.

Reading refuses what `json.loads` would let through and later code would trip over: NaN and
Infinity, numbers that overflow to infinity, lone surrogates (they make SQLite inserts and
UTF-8 encoding raise), nesting deep enough to raise RecursionError, and an object with a
repeated key (`json.loads` keeps the last copy, other readers the first: RFC 8259 section 4
leaves it open, so a value checked by one reader could be another's). The WebSocket's
messages (codec.py) and the JSON API's bodies (dagd/net/http/api.py) are both read here.

Writing is compact (no spaces) with non-ASCII characters as they are: exactly
`json.dumps(value, separators=(",", ":"), ensure_ascii=False)`. `dumps_fast` gives the same text
through orjson, which takes about half the time of the standard encoder; it serves the event
path, where every event is encoded once (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def dumps(value: Any) -> str:
    """`value` (dicts, lists, strings, numbers, booleans, None) as compact JSON text:
    `json.dumps(value, separators=(",", ":"), ensure_ascii=False)`.

    Raises TypeError for a value JSON cannot hold, ValueError for a circular one.
    """
    return _encoder.encode(value)


def dumps_fast(value: Any) -> str:
    """`dumps(value)`, built by orjson where that gives the same text.

    The caller promises that every float in `value` is 0 or has a magnitude in [1e-4, 1e16)
    (and is finite): outside that range Python writes exponents (`1e-05`, `1e+16`) where
    orjson does not (`0.00001`, `1e16`). Within it both write the shortest text that reads back
    as the same float. What orjson refuses (a lone surrogate, an integer beyond 64 bits) goes
    through `dumps`, so the text is always `dumps(value)`; a test holds the two equal.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _encoder.encode(value)


def float_fits_fast(value: float) -> bool:
    """Does `dumps_fast` write this float as `dumps` does? (0, or finite with a magnitude in
    [1e-4, 1e16): where Python's repr writes no exponent.)"""
    return value == 0 or 1e-4 <= abs(value) < 1e16


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:40]!r} appears twice in an object")
            seen.add(key)
    return found


def loads_strict(text: str) -> Any:
    """`json.loads(text)`, refusing NaN/Infinity, overflowing numbers, lone surrogates and
    repeated keys.

    Returns the decoded value (dict, list, str, int, float, bool or None). Raises ValueError,
    with a message fit for an `invalid_message` error, for anything else: invalid JSON (with
    its position), nesting too deep, a constant or number it refuses, a key that appears twice
    in one object, a lone surrogate.
    """
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_check_float,
            object_pairs_hook=_object,
        )
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if _SURROGATE_ESCAPE.search(text):  # rare: only then pay for the full check
        try:
            dumps(value).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text contains a lone surrogate (invalid Unicode)") from None
    return value
