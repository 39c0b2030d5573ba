"""dagd.core.protocol.events: DAG events on the wire, camelCase, ISO `Z` times, integer ms
durations, and the fast encoder that must write exactly what json.dumps writes."""

from __future__ import annotations

import json
import re

import pytest
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from hypothesis import given, settings
from hypothesis import strategies as st

from dagd.core.events import (
    EVENT_TYPES,
    DagRunProgressEvent,
    DagRunStatusEvent,
    DagStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import RunStatus, StepStatus
from dagd.core.protocol.events import encode_event, event_from_wire, event_to_wire

T = 1_704_110_400.0  # 2024-01-01T12:00:00Z
RUN = "manual__2024-01-01T12:00:00.123456+00:00"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Millisecond-exact times, so a round trip through the wire gives back the same floats.
EVENTS = [
    pytest.param(DagRunStatusEvent("etl", RUN, RunStatus.RUNNING, T + 0.123), id="run-status"),
    pytest.param(DagRunStatusEvent("etl", RUN, RunStatus.FAILED, T, seq=42), id="run-status-seq"),
    pytest.param(
        StepStatusEvent(
            "etl", RUN, "extract", StepStatus.SUCCESS, T, T + 300, 300_000, 0, None, T + 300.001
        ),
        id="step-success",
    ),
    pytest.param(
        StepStatusEvent(
            "etl", RUN, "load", StepStatus.RETRYING, T, T + 1.5, 1500, 2, "exit 3", T + 2, seq=7
        ),
        id="step-retrying",
    ),
    pytest.param(
        StepStatusEvent("etl", RUN, "load", StepStatus.UPSTREAM_FAILED, None, T, None, 0, None, T),
        id="step-no-start",
    ),
    pytest.param(
        StepStatusEvent("etl", RUN, "load", StepStatus.PENDING, None, None, None, 0, None, T),
        id="step-pending",
    ),
    pytest.param(DagRunProgressEvent("etl", RUN, 4, 2, 1, 0, 1, 50.0, T + 0.5), id="progress"),
    pytest.param(
        DagRunProgressEvent("etl", RUN, 3, 1, 0, 1, 1, 33.3, T, seq=1_000_000), id="progress-seq"
    ),
    pytest.param(ErrorEvent("etl", RUN, "load", "Failed: Invalid format", T), id="error"),
    pytest.param(
        ErrorEvent("etl", None, None, "dags/etl.toml: bad cron", T, seq=3), id="error-no-run"
    ),
    pytest.param(ErrorEvent("étl", RUN, "s", 'unicode ✓ "quoted"\nline', T), id="error-text"),
    pytest.param(DagStatusEvent("etl", True, None, T, seq=9), id="dag-paused"),
    pytest.param(
        DagStatusEvent("etl", False, "dags/etl.toml: bad cron\ndags/etl.toml: x", T),
        id="dag-file-error",
    ),
]


@pytest.mark.parametrize("event", EVENTS)
def test_round_trip(event):
    text = encode_event(event)
    message = json.loads(text)
    # Compact JSON on one line; non-ASCII stays as is.
    assert "\n" not in text
    assert text == json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    assert message["type"] == EVENT_TYPES[type(event)]
    assert event_from_wire(message) == event
    assert event_to_wire(event) == message


@pytest.mark.parametrize("event", EVENTS)
def test_seq_lives_beside_data(event):
    message = json.loads(encode_event(event))
    if event.seq is None:
        assert list(message) == ["type", "data"]
    else:
        assert list(message) == ["type", "seq", "data"]
        assert message["seq"] == event.seq
    assert "seq" not in message["data"]


WIRE_KEYS = {
    DagRunStatusEvent: ["dagId", "runId", "status", "timestamp"],
    StepStatusEvent: [
        "dagId",
        "runId",
        "stepId",
        "status",
        "startTime",
        "endTime",
        "duration",
        "retryCount",
        "error",
        "timestamp",
    ],
    DagRunProgressEvent: [
        "dagId",
        "runId",
        "totalSteps",
        "completedSteps",
        "runningSteps",
        "failedSteps",
        "pendingSteps",
        "completionPercentage",
        "timestamp",
    ],
    ErrorEvent: ["dagId", "runId", "stepId", "error", "timestamp"],
    DagStatusEvent: ["dagId", "paused", "fileError", "timestamp"],
}


@pytest.mark.parametrize("event", EVENTS)
def test_wire_field_names_are_the_documented_ones(event):
    data = json.loads(encode_event(event))["data"]
    assert list(data) == WIRE_KEYS[type(event)]


def test_every_event_type_has_a_wire_name():
    assert {
        DagRunStatusEvent: "dag_run_status",
        StepStatusEvent: "step_status",
        DagRunProgressEvent: "dag_run_progress",
        ErrorEvent: "error",
        DagStatusEvent: "dag_status",
    } == EVENT_TYPES


def test_step_status_values_on_the_wire():
    event = StepStatusEvent(
        "example_dag",
        "manual__2023-01-01T00:00:00+00:00",
        "extract_data",
        StepStatus.SUCCESS,
        1_672_531_200.0,
        1_672_531_500.0,
        300_000,
        0,
        None,
        1_672_531_500.0,
    )
    assert json.loads(encode_event(event)) == {
        "type": "step_status",
        "data": {
            "dagId": "example_dag",
            "runId": "manual__2023-01-01T00:00:00+00:00",
            "stepId": "extract_data",
            "status": "success",
            "startTime": "2023-01-01T00:00:00.000Z",
            "endTime": "2023-01-01T00:05:00.000Z",
            "duration": 300000,
            "retryCount": 0,
            "error": None,
            "timestamp": "2023-01-01T00:05:00.000Z",
        },
    }


def test_progress_values_on_the_wire():
    event = DagRunProgressEvent("example_dag", RUN, 4, 2, 1, 0, 1, 50.0, T)
    data = json.loads(encode_event(event))["data"]
    assert data["completionPercentage"] == 50.0
    assert isinstance(data["totalSteps"], int) and data["totalSteps"] == 4
    assert '"completionPercentage":50.0' in encode_event(event)


@pytest.mark.parametrize("event", EVENTS)
def test_times_are_iso_utc_with_z_and_duration_is_integer_ms(event):
    data = json.loads(encode_event(event))["data"]
    for key in ("timestamp", "startTime", "endTime"):
        if data.get(key) is not None:
            assert ISO_Z.match(data[key]), data[key]
    if "duration" in data and data["duration"] is not None:
        assert type(data["duration"]) is int


def test_run_and_step_status_strings():
    for status in RunStatus:
        data = json.loads(encode_event(DagRunStatusEvent("d", RUN, status, T)))["data"]
        assert data["status"] == status.value
    for status in StepStatus:
        event = StepStatusEvent("d", RUN, "s", status, None, None, None, 0, None, T)
        assert json.loads(encode_event(event))["data"]["status"] == status.value


# Events as another producer may write them (times without milliseconds) decode as they are.
FOREIGN_EXAMPLES = [
    (
        "dag_run_status",
        {
            "dagId": "example_dag",
            "runId": "manual__2023-01-01T00:00:00+00:00",
            "status": "running",
            "timestamp": "2023-01-01T00:00:00Z",
        },
    ),
    (
        "step_status",
        {
            "dagId": "example_dag",
            "runId": "manual__2023-01-01T00:00:00+00:00",
            "stepId": "extract_data",
            "status": "success",
            "startTime": "2023-01-01T00:00:00Z",
            "endTime": "2023-01-01T00:05:00Z",
            "duration": 300000,
            "retryCount": 0,
            "error": None,
            "timestamp": "2023-01-01T00:05:00Z",
        },
    ),
    (
        "dag_run_progress",
        {
            "dagId": "example_dag",
            "runId": "manual__2023-01-01T00:00:00+00:00",
            "totalSteps": 4,
            "completedSteps": 2,
            "runningSteps": 1,
            "failedSteps": 0,
            "pendingSteps": 1,
            "completionPercentage": 50.0,
            "timestamp": "2023-01-01T00:05:00Z",
        },
    ),
    (
        "error",
        {
            "dagId": "example_dag",
            "runId": "manual__2023-01-01T00:00:00+00:00",
            "stepId": "transform_data",
            "error": "Failed to process data: Invalid format",
            "timestamp": "2023-01-01T00:10:00Z",
        },
    ),
]


@pytest.mark.parametrize(("kind", "data"), FOREIGN_EXAMPLES, ids=[k for k, _ in FOREIGN_EXAMPLES])
def test_foreign_examples_decode_and_keep_their_keys(kind, data):
    event = event_from_wire({"type": kind, "data": data})
    assert event.dag_id == "example_dag"
    assert event.timestamp >= 1_672_531_200.0  # 2023-01-01T00:00:00Z
    again = json.loads(encode_event(event))
    assert again["type"] == kind
    assert list(again["data"]) == list(data)
    # Same values, except times now carry milliseconds.
    for key, value in data.items():
        if isinstance(value, str) and value.endswith("Z"):
            assert again["data"][key] == value[:-1] + ".000Z"
        else:
            assert again["data"][key] == value


def test_decoded_times_are_unix_seconds():
    event = event_from_wire({"type": "step_status", "data": FOREIGN_EXAMPLES[1][1]})
    assert event.start_time == 1_672_531_200.0
    assert event.end_time == 1_672_531_500.0
    assert event.status is StepStatus.SUCCESS


def valid_message():
    return json.loads(encode_event(EVENTS[2].values[0]))


def forbidden(exc: ClassValidationError) -> set[str]:
    keys: set[str] = set()
    for sub in exc.exceptions:
        if isinstance(sub, ForbiddenExtraKeysError):
            keys |= sub.extra_fields
    return keys


@pytest.mark.parametrize("extra", ["extra", "dag_id", "seq", "stepID"])
def test_extra_keys_are_rejected(extra):
    message = valid_message()
    message["data"][extra] = 1
    with pytest.raises(ClassValidationError) as info:
        event_from_wire(message)
    assert forbidden(info.value) == {extra}


def test_snake_case_keys_are_not_accepted_instead_of_camel_case():
    message = valid_message()
    message["data"]["dag_id"] = message["data"].pop("dagId")
    with pytest.raises(ClassValidationError):
        event_from_wire(message)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timestamp", 1_704_110_400),  # a number, not an ISO string
        ("timestamp", "2024-01-01T12:00:00"),  # no time zone
        ("timestamp", "yesterday"),
        ("status", "bogus"),
        ("retryCount", "many"),
    ],
)
def test_bad_values_are_rejected(key, value):
    message = valid_message()
    message["data"][key] = value
    with pytest.raises(ClassValidationError):
        event_from_wire(message)


def test_missing_key_is_rejected():
    message = valid_message()
    del message["data"]["stepId"]
    with pytest.raises(ClassValidationError):
        event_from_wire(message)


def test_unknown_type_is_rejected():
    with pytest.raises(KeyError):
        event_from_wire({"type": "dag_exploded", "data": {}})


def test_offsets_other_than_z_are_read_as_the_same_instant():
    message = valid_message()
    message["data"]["timestamp"] = "2024-01-01T13:00:00.500+01:00"
    assert event_from_wire(message).timestamp == T + 0.5


# Any text a field may hold (control characters, quotes, non-ASCII, lone surrogates excluded:
# Python strings from TOML and the OS never carry them), any time of the 21st century.
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_time = st.floats(946_684_800, 4_102_444_800, allow_nan=False)
_opt_time = st.none() | _time
_seq = st.none() | st.integers(1, 2**53)
_events = st.one_of(
    st.builds(DagRunStatusEvent, _text, _text, st.sampled_from(RunStatus), _time, _seq),
    st.builds(
        StepStatusEvent,
        _text,
        _text,
        _text,
        st.sampled_from(StepStatus),
        _opt_time,
        _opt_time,
        st.none() | st.integers(0, 2**40),
        st.integers(0, 1000),
        st.none() | _text,
        _time,
        _seq,
    ),
    st.builds(
        DagRunProgressEvent,
        _text,
        _text,
        *[st.integers(0, 100_000)] * 5,
        st.floats(0, 100, allow_nan=False),
        _time,
        _seq,
    ),
    st.builds(ErrorEvent, _text, st.none() | _text, st.none() | _text, _text, _time, _seq),
    st.builds(DagStatusEvent, _text, st.booleans(), st.none() | _text, _time, _seq),
)


@settings(max_examples=300, deadline=None)
@given(event=_events)
def test_fast_encoding_is_exactly_json_dumps_of_the_wire_dict(event):
    expected = json.dumps(event_to_wire(event), separators=(",", ":"), ensure_ascii=False)
    assert encode_event(event) == expected


@pytest.mark.parametrize(
    "event",
    [
        # Exponent notation: Python writes 1e-05 where orjson writes 0.00001.
        DagRunProgressEvent("etl", RUN, 3, 0, 0, 0, 3, 1e-5, T, seq=1),
        DagRunProgressEvent("etl", RUN, 3, 0, 0, 0, 3, 5e-324, T),
        DagRunProgressEvent("etl", RUN, 3, 0, 0, 0, 3, float("nan"), T),
        # What orjson refuses: a lone surrogate, an integer beyond 64 bits.
        ErrorEvent("etl", RUN, "s", "bad \ud800 byte", T, seq=2),
        StepStatusEvent("etl", RUN, "s", StepStatus.SUCCESS, T, T, 2**70, 0, None, T),
    ],
    ids=["tiny-float", "subnormal", "nan", "lone-surrogate", "huge-int"],
)
def test_values_orjson_writes_otherwise_take_the_standard_encoder(event):
    expected = json.dumps(event_to_wire(event), separators=(",", ":"), ensure_ascii=False)
    assert encode_event(event) == expected


def test_a_step_event_carries_worker_only_when_an_executor_named_one() -> None:
    import orjson

    from dagd.core.events import StepStatusEvent
    from dagd.core.model import StepStatus
    from dagd.core.protocol.events import encode_event, event_from_wire

    local = StepStatusEvent("d", "r", "s", StepStatus.SUCCESS, 1.0, 2.0, 1000, 0, None, 2.0)
    assert "worker" not in orjson.loads(encode_event(local))["data"]
    remote = StepStatusEvent(
        "d", "r", "s", StepStatus.SUCCESS, 1.0, 2.0, 1000, 0, None, 2.0, worker="tcp://h:1"
    )
    wire = orjson.loads(encode_event(remote))
    assert wire["data"]["worker"] == "tcp://h:1"
    assert event_from_wire(wire) == remote
