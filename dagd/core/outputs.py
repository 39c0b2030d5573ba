"""Outputs: small named values a step hands to the steps downstream of it.

A shell step appends `key=value` lines to the file named by `$DAGD_OUTPUT` (GitHub Actions'
`$GITHUB_OUTPUT` format), or a multi-line value as

    key<<DELIMITER
    first line
    second line
    DELIMITER

and a Python step (`call`) returns a mapping of str keys to JSON-able values. The steps
downstream of it (every step it reaches through `depends_on`, transitively) receive them as
environment variables `DAGD_OUTPUT_<STEP>_<KEY>` (`output_variable`) and, for Python steps, as
`ctx.outputs[step_id][key]`; a value is data, never pasted into shell text.

Rules this file keeps (docs/dags.md, "Outputs"): keys match `OUTPUT_KEY_RE` and differ in more
than case; one step's outputs are at most `MAX_OUTPUT_BYTES` (a shell step's output file, a
Python step's mapping as JSON); a value that is not a string reaches the environment as its
compact JSON text (`3`, `true`, `null`, `[1,2]`). Every refusal is an `OutputError` whose
message names the key and says what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

#: The variable naming a shell step's output file.
OUTPUT_FILE_VAR = "DAGD_OUTPUT"
#: The prefix of the variables a downstream step reads outputs from.
OUTPUT_VAR_PREFIX = "DAGD_OUTPUT_"
#: What an output key may be: a letter or _, then letters, digits and _, at most 64 in all.
OUTPUT_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
#: The most one step's outputs may take, in bytes: its output file (a shell step), or its
#: mapping as compact UTF-8 JSON (a Python step). Far below Linux's 128 KiB limit on one
#: environment string, so one output always fits in a downstream step's environment.
MAX_OUTPUT_BYTES = 64 * 1024
#: The most the outputs of all steps of one run may take together, in bytes (each step's as
#: compact UTF-8 JSON, `encoded_size`): 16 steps at MAX_OUTPUT_BYTES. A run holds its
#: outputs in memory while it runs, and `get_run` builds and encodes them whole on the
#: daemon's event loop: without a bound a 2,000-step run could carry 128 MB. Outputs are for
#: small values (ids, paths, counts); data goes in files.
MAX_RUN_OUTPUT_BYTES = 1024 * 1024

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")

#: One encoder, built once: json.dumps with options builds one per call (a few µs each).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: Values a JSON round trip gives back as they are (so they need no copy).
_SCALARS = (str, int, float, bool, type(None))

#: One step's outputs: key -> JSON value (a shell step's are all strings).
Outputs = Mapping[str, Any]


class OutputError(ValueError):
    """A step's outputs cannot be taken; the message says which key and why, for people."""


def output_variable(step_id: str, key: str) -> str:
    """The environment variable output `key` of step `step_id` arrives in, downstream:
    `DAGD_OUTPUT_<STEP>_<KEY>`, upper-cased, each character that is not a letter or digit
    turned into `_` (`fetch-data`, `count` -> `DAGD_OUTPUT_FETCH_DATA_COUNT`)."""
    return OUTPUT_VAR_PREFIX + _NOT_ALNUM.sub("_", f"{step_id}_{key}").upper()


def env_text(value: Any) -> str:
    """An output value as an environment variable's text: a string as it is, anything else
    as compact JSON (`3`, `1.5`, `true`, `null`, `["a",1]`)."""
    if isinstance(value, str):
        return value
    return _ENCODER.encode(value)


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"key {key!r} is not a string"
    if not OUTPUT_KEY_RE.match(key):
        return (
            f"key {key!r} is not a valid output name (a letter or _, then letters, digits "
            "and _, at most 64)"
        )
    return None


def _check_keys(keys: list[str]) -> None:
    """Refuse keys that differ only in case: they would be one variable downstream."""
    seen: dict[str, str] = {}
    for key in keys:
        other = seen.setdefault(key.upper(), key)
        if other != key:
            raise OutputError(
                f"keys {other!r} and {key!r} differ only in case (both would be "
                f"DAGD_OUTPUT_<STEP>_{key.upper()}): rename one"
            )


def _value_problem(key: str, value: str) -> str | None:
    if "\0" in value:
        return f"the value of {key!r} contains a NUL character (no environment can hold it)"
    return None


def output_file_too_large(size: int) -> OutputError:
    """The error of an output file of `size` bytes, over MAX_OUTPUT_BYTES."""
    return OutputError(f"the output file holds {size} bytes, over the limit of {MAX_OUTPUT_BYTES}")


def parse_output_file(data: bytes) -> dict[str, str]:
    """A shell step's output file -> its outputs. Lines are `key=value` (the value is the rest
    of the line, `=` included) or `key<<DELIMITER` followed by the value's lines and a line that
    is exactly DELIMITER; blank lines are ignored; a key given twice keeps its last value; a
    line may end in `\\r\\n`. Raises OutputError for a file over MAX_OUTPUT_BYTES, bytes that
    are not UTF-8, a line of neither form (with its number), a bad key, a heredoc that never
    ends, or a NUL character."""
    if len(data) > MAX_OUTPUT_BYTES:
        raise output_file_too_large(len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OutputError(f"the output file is not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    outputs: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        number = i + 1
        i += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc >= 0 and (eq < 0 or heredoc < eq):
            key, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not delimiter:
                raise OutputError(f"line {number}: {key}<< needs a delimiter (key<<EOF)")
            body: list[str] = []
            while i < len(lines) and lines[i].removesuffix("\r") != delimiter:
                body.append(lines[i].removesuffix("\r"))
                i += 1
            if i == len(lines):
                raise OutputError(
                    f"line {number}: {key}<<{delimiter} has no line {delimiter!r} to end it"
                )
            i += 1
            value = "\n".join(body)
        elif eq >= 0:
            key, value = line[:eq], line[eq + 1 :]
        else:
            raise OutputError(f"line {number}: expected key=value or key<<DELIMITER")
        problem = _key_problem(key) or _value_problem(key, value)
        if problem is not None:
            raise OutputError(f"line {number}: {problem}")
        outputs.pop(key, None)  # the last one given wins, in its place
        outputs[key] = value
    _check_keys(list(outputs))
    return outputs


def run_outputs_too_large(total: int) -> str:
    """Why a step's outputs are refused: the run's would take `total` bytes together."""
    return (
        f"the run's outputs would take {total} bytes together, over the limit of "
        f"{MAX_RUN_OUTPUT_BYTES} per run"
    )


def check_returned(value: object) -> dict[str, Any] | None:
    """What a Python step returned -> its outputs: None (no outputs), or a mapping of str keys
    to JSON-able values (str, int, float, bool, None, lists and str-keyed dicts of them),
    checked as a JSON round trip would keep them (a tuple becomes a list). Raises OutputError
    for anything else, a bad key, a value JSON cannot hold (NaN and infinity included), a
    string with a NUL character or a lone surrogate, or more than MAX_OUTPUT_BYTES of JSON."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise OutputError(
            f"a Python step returns a mapping of outputs or None, not {type(value).__name__}"
        )
    for key in value:
        problem = _key_problem(key)
        if problem is not None:
            raise OutputError(problem)
    _check_keys(list(value))
    given = dict(value)
    try:
        # orjson: a tenth of the standard encoder's time. It writes NaN and infinity as
        # null and refuses integers beyond 64 bits, so either sends the outputs the slow way.
        data = orjson.dumps(given)
    except orjson.JSONEncodeError:
        data = None
    if data is None or b"null" in data:
        data = _checked_json(given)
    for key, item in given.items():
        if isinstance(item, str):
            problem = _value_problem(key, item)
            if problem is not None:
                raise OutputError(problem)
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputError(
            f"the outputs take {len(data)} bytes as JSON, over the limit of {MAX_OUTPUT_BYTES}"
        )
    if all(type(item) in _SCALARS for item in given.values()):
        return given  # the usual case: nothing a JSON round trip would change
    outputs: dict[str, Any] = json.loads(data)  # a copy, as JSON keeps it (a tuple: a list)
    return outputs


def _checked_json(given: dict[str, Any]) -> bytes:
    """`given` as UTF-8 JSON by the standard encoder, which refuses NaN and infinity. Raises
    OutputError naming the first key whose value JSON cannot hold, or for a lone surrogate."""
    try:
        text = encode_outputs(given)
    except (TypeError, ValueError, RecursionError):
        for key, item in given.items():  # which one: the error names it
            try:
                encode_outputs({key: item})
            except (TypeError, ValueError, RecursionError) as exc:
                raise OutputError(f"the value of {key!r} is not JSON: {exc}") from None
        raise OutputError("the outputs are not JSON") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError("a value is not valid Unicode text (a lone surrogate)") from None


def encode_outputs(outputs: Outputs) -> str:
    """Outputs as the compact JSON object the store keeps. Raises TypeError or ValueError
    for what JSON cannot hold (NaN and infinity included)."""
    return _ENCODER.encode(outputs)


def encoded_size(outputs: Outputs) -> int:
    """Bytes of `encode_outputs(outputs)` as UTF-8. Raises OutputError for a lone surrogate."""
    try:
        return len(encode_outputs(outputs).encode("utf-8"))
    except UnicodeEncodeError:
        raise OutputError("a value is not valid Unicode text (a lone surrogate)") from None


def decode_outputs(text: str | None) -> dict[str, Any] | None:
    """The store's JSON object back to outputs; None stays None."""
    if text is None:
        return None
    outputs: dict[str, Any] = json.loads(text)
    return outputs


def output_environment(upstream: Mapping[str, Outputs]) -> dict[str, str]:
    """The variables a step gets from its upstream steps' outputs (step id -> outputs):
    `output_variable(step, key)` -> `env_text(value)`. Raises OutputError when two outputs
    would be one variable (`a-b` and `a_b`, say), naming both."""
    env: dict[str, str] = {}
    owner: dict[str, str] = {}
    for step_id, outputs in upstream.items():
        for key, value in outputs.items():
            name = output_variable(step_id, key)
            if name in env:
                raise OutputError(
                    f"outputs {owner[name]} and {step_id}.{key} would both be {name}: rename one"
                )
            env[name] = env_text(value)
            owner[name] = f"{step_id}.{key}"
    return env


__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_RUN_OUTPUT_BYTES",
    "OUTPUT_FILE_VAR",
    "OUTPUT_KEY_RE",
    "OUTPUT_VAR_PREFIX",
    "OutputError",
    "Outputs",
    "check_returned",
    "decode_outputs",
    "encode_outputs",
    "encoded_size",
    "env_text",
    "output_environment",
    "output_file_too_large",
    "output_variable",
    "parse_output_file",
    "run_outputs_too_large",
]
