"""dagd.core.protocol: every request and answer class, the request -> answer table, the one
converter (round trips, strictness, the exact wire shapes docs/protocol.md gives), error codes.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from dagd.core.model import RunStatus, StepStatus, TriggerRule
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    ANSWER_TYPES,
    SERVER_ANSWERS,
    AuthSuccess,
    BackfillAction,
    BackfillResult,
    BackfillSlot,
    BrokenFile,
    CancelAccepted,
    DagDetail,
    DagList,
    DagSummary,
    Edge,
    Error,
    FileProblem,
    Heartbeat,
    LogChunk,
    LogEnd,
    LogEndReason,
    LogFollowing,
    LogUnfollowed,
    Paused,
    Pong,
    PoolList,
    ReplayComplete,
    RetryAccepted,
    RunDetail,
    RunList,
    SnapshotComplete,
    StepDefinition,
    StepDetail,
    Subscribed,
    Triggered,
    TriggerKind,
    Unpaused,
    Unsubscribed,
)
from dagd.core.protocol.codec import encode, parse_client_message, parse_server_message, to_wire
from dagd.core.protocol.codes import CloseCode, ErrorCode, ProtocolError, Role
from dagd.core.protocol.converter import camel, converter
from dagd.core.protocol.pairs import ANSWER_TO, answer_to, with_request_id
from dagd.core.protocol.requests import (
    CLIENT_MESSAGES,
    REQUEST_TYPES,
    Auth,
    Backfill,
    Cancel,
    FollowLog,
    GetDag,
    GetRun,
    ListDags,
    ListPools,
    ListRuns,
    Pause,
    Ping,
    Replay,
    Retry,
    Snapshot,
    Subscribe,
    Trigger,
    UnfollowLog,
    Unpause,
    Unsubscribe,
)
from dagd.core.records import AttemptRecord, RunRecord

T = 1_704_110_400.0  # 2024-01-01T12:00:00Z; times below are millisecond-exact
RUN = "manual__2024-01-01T12:00:00.123456+00:00"

#: Two examples of every request: the bare one and one with every field set.
REQUESTS: dict[type, list[Any]] = {
    Auth: [Auth("tok"), Auth("tök", request_id=1)],
    Subscribe: [Subscribe(["etl"]), Subscribe(["*", "b"], since=0, request_id="r")],
    Unsubscribe: [Unsubscribe(["etl"]), Unsubscribe(["a", "b"], request_id=0)],
    Replay: [Replay(5), Replay(0, request_id="x")],
    Snapshot: [Snapshot(), Snapshot(request_id=9)],
    Trigger: [
        Trigger("etl"),
        Trigger("etl", {"s": "x", "i": 1, "f": 1.5, "b": True}, request_id="t"),
    ],
    Cancel: [Cancel(RUN), Cancel(RUN, request_id=2)],
    Retry: [Retry(RUN), Retry(RUN, request_id=3)],
    ListDags: [ListDags(), ListDags(request_id="l")],
    ListPools: [ListPools(), ListPools(request_id=3)],
    ListRuns: [ListRuns(), ListRuns("etl", 1000, request_id=4)],
    GetRun: [GetRun(RUN), GetRun(RUN, request_id="g")],
    GetDag: [GetDag("etl"), GetDag("etl", request_id=11)],
    Pause: [Pause("etl"), Pause("etl", request_id="p")],
    Unpause: [Unpause("etl"), Unpause("etl", request_id=12)],
    FollowLog: [
        FollowLog(RUN, "a"),
        FollowLog(RUN, "a", 2, "err", 65536, request_id="f"),
        FollowLog(RUN, "a", None, "out", 0, 4096),
    ],
    UnfollowLog: [UnfollowLog(RUN, "a", 1), UnfollowLog(RUN, "a", 3, "err", request_id=2)],
    Backfill: [
        Backfill("etl", "2024-01-01", "2024-01-31"),
        Backfill(
            "etl",
            "2024-01-01T06:00:00+02:00",
            "2024-01-02",
            {"date": "x", "n": 2},
            rerun=True,
            dry_run=True,
            request_id="b",
        ),
    ],
    Ping: [Ping(), Ping(request_id="p")],
}

DAG = DagSummary("etl", "nightly ETL", "0 2 * * *", T + 0.5, ["a", "b"], ["x"], {"date": ""})
BROKEN = DagSummary(
    "m", "", None, None, [], [], {}, "Europe/Berlin", paused=True, file_error="m.toml: bad"
)
STEP_A = StepDefinition(
    "a", "extract", "echo hi", None, [], "local", 2, 1.5, 30.0, TriggerRule.ALL_SUCCESS, 0
)
STEP_B = StepDefinition(
    "b", "", ["ls", "-l"], None, ["a"], "dask", 0, 0.0, None, TriggerRule.ALL_DONE, 1
)
STEP_C = StepDefinition(
    "c", "", None, "m:f", ["a"], "local", 0, 0.0, None, TriggerRule.ONE_FAILED, 1
)
ATTEMPT = AttemptRecord("a", 1, StepStatus.RETRYING, T, T + 1, 1000, "exit 1")
ATTEMPT_2 = AttemptRecord("a", 2, StepStatus.SUCCESS, T + 2, T + 3, 1000, None, worker="tcp://w")
DONE = RunRecord("etl", RUN, RunStatus.SUCCESS, {"date": "x"}, T, T + 1, T + 2.25)
#: Two examples of every answer.
ANSWERS: dict[type, list[Any]] = {
    AuthSuccess: [AuthSuccess(Role.READ, 0), AuthSuccess(Role.OPERATE, 1234, request_id=1)],
    Subscribed: [Subscribed([]), Subscribed(["*", "etl"], request_id="s")],
    Unsubscribed: [Unsubscribed(["etl"]), Unsubscribed([], request_id=5)],
    ReplayComplete: [ReplayComplete(0), ReplayComplete(1400, request_id="r")],
    SnapshotComplete: [SnapshotComplete(5100), SnapshotComplete(1, request_id=2)],
    Triggered: [Triggered("etl", RUN), Triggered("etl", RUN, request_id="t")],
    CancelAccepted: [CancelAccepted(RUN), CancelAccepted(RUN, request_id=7)],
    RetryAccepted: [RetryAccepted(RUN), RetryAccepted(RUN, request_id=8)],
    PoolList: [
        PoolList([]),
        PoolList([PoolUsage("warehouse", 2, 2, 3, 4), PoolUsage("gpu", 1, 0, 0, 0)], "p"),
    ],
    DagList: [
        DagList([]),
        DagList([DAG, DagSummary("m", "", None, None, [], [], {})], request_id="d"),
        DagList(
            [DAG],
            [
                BrokenFile("dags/etl.toml", "etl", [FileProblem("bad", "load", "timeout")]),
                BrokenFile("dags/x.toml", None, [FileProblem("not TOML: ..."), FileProblem("b")]),
            ],
        ),
    ],
    RunList: [
        RunList([]),
        RunList(
            [
                RunRecord("etl", RUN, RunStatus.QUEUED, {}, T, None, None),
                RunRecord("etl", RUN, RunStatus.SUCCESS, {"date": "x"}, T, T + 1, T + 2.25),
            ],
            request_id=6,
        ),
    ],
    RunDetail: [
        RunDetail(RunRecord("etl", "x", RunStatus.QUEUED, {}, T, None, None), None, None, None, []),
        RunDetail(
            DONE,
            TriggerKind.MANUAL,
            1250,
            "ab" * 32,
            [
                StepDetail(
                    "a",
                    StepStatus.SUCCESS,
                    T + 2,
                    T + 3,
                    1000,
                    1,
                    None,
                    2,
                    [],
                    [ATTEMPT, ATTEMPT_2],
                ),
                StepDetail("b", StepStatus.PENDING, None, None, None, 0, None, 0, ["a"], []),
            ],
            request_id="r",
        ),
    ],
    DagDetail: [
        DagDetail(BROKEN, False, 1, None, [], []),
        DagDetail(
            DAG,
            True,
            3,
            2,
            [STEP_A, STEP_B, STEP_C],
            [Edge("a", "b"), Edge("a", "c")],
            request_id=9,
        ),
    ],
    Paused: [Paused("etl"), Paused("etl", request_id="p")],
    Unpaused: [Unpaused("etl", None), Unpaused("etl", T + 60, request_id=3)],
    BackfillResult: [
        BackfillResult("etl", False, []),
        BackfillResult(
            "etl",
            True,
            [
                BackfillSlot(T, "scheduled__2024-01-01T12:00:00+00:00__etl", BackfillAction.QUEUED),
                BackfillSlot(T + 60, "s2", BackfillAction.SKIPPED, "its run already succeeded"),
                BackfillSlot(T + 120, "s3", BackfillAction.RETRIED),
                BackfillSlot(T + 180, "s4", BackfillAction.RERUN),
            ],
            request_id="b",
        ),
    ],
    Pong: [Pong(T), Pong(T + 0.001, request_id="p")],
    Heartbeat: [Heartbeat(T), Heartbeat(T + 59.999)],
    LogFollowing: [LogFollowing(RUN, "a", 1, "out", 0), LogFollowing(RUN, "a", 3, "err", 9, "f")],
    LogUnfollowed: [LogUnfollowed(RUN, "a", 2, "err", request_id=1)],
    LogChunk: [
        LogChunk(RUN, "a", 1, "out", 0, 6, "hello\n"),
        LogChunk(RUN, "a", 2, "err", 6, 10, "\x00\x1b\ufffd"),
    ],
    LogEnd: [
        LogEnd(RUN, "a", 1, "out", 6, LogEndReason.COMPLETE),
        LogEnd(RUN, "a", 1, "err", 0, LogEndReason.DELETED, "history retention deleted it"),
    ],
    Error: [
        Error(ErrorCode.AUTH_FAILED, "invalid token", T),
        Error(ErrorCode.REPLAY_UNAVAILABLE, "gone", T, oldest_seq=5000, request_id="r"),
        Error(ErrorCode.REPLAY_UNAVAILABLE, "all gone", T, oldest_seq=None),
    ],
}


def _cases(table: dict[type, list[Any]]) -> list[Any]:
    return [
        pytest.param(example, id=f"{cls.__name__}-{n}")
        for cls, examples in table.items()
        for n, example in enumerate(examples)
    ]


def test_every_message_class_has_examples() -> None:
    assert set(REQUESTS) == set(REQUEST_TYPES)
    assert set(ANSWERS) == set(ANSWER_TYPES)


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize("request_", _cases(REQUESTS))
def test_request_round_trip(request_: Any) -> None:
    wire = to_wire(request_)
    assert next(iter(wire)) == "type"  # `type` comes first
    assert wire["type"] == REQUEST_TYPES[type(request_)]
    assert converter.structure(wire, type(request_)) == request_
    assert converter.structure(converter.unstructure(request_), type(request_)) == request_
    # ... and through the server's strict parser, from text
    assert parse_client_message(encode(request_)) == request_


@pytest.mark.parametrize("answer", _cases(ANSWERS))
def test_answer_round_trip(answer: Any) -> None:
    wire = to_wire(answer)
    assert next(iter(wire)) == "type"
    assert wire["type"] == ANSWER_TYPES[type(answer)]
    assert converter.structure(converter.unstructure(answer), type(answer)) == answer
    # ... and through the client's parser, from text
    assert parse_server_message(encode(answer)) == answer


@pytest.mark.parametrize(("request_cls", "answer_cls"), list(ANSWER_TO.items()))
def test_each_request_is_paired_with_its_answer(request_cls: type, answer_cls: type) -> None:
    """The table covers every request; each pair round-trips with the request's requestId."""
    for request_ in REQUESTS[request_cls]:
        for answer in ANSWERS[answer_cls]:
            answered = with_request_id(answer, request_.request_id)
            assert answered.request_id == request_.request_id
            assert parse_server_message(encode(answered)) == answered
    assert set(ANSWER_TO) == set(REQUEST_TYPES)
    assert Heartbeat not in ANSWER_TO.values()  # answers nothing


def test_with_request_id_is_the_one_place_that_sets_it() -> None:
    pong = Pong(T)
    assert with_request_id(pong, None) is pong
    assert "requestId" not in to_wire(pong)
    assert to_wire(with_request_id(pong, 7))["requestId"] == 7
    assert to_wire(with_request_id(pong, "a-b"))["requestId"] == "a-b"
    assert "requestId" not in to_wire(with_request_id(Pong(T, request_id=1), None))


def test_answer_to_checks_the_table_and_copies_the_request_id() -> None:
    assert answer_to(Ping(request_id=4), Pong(T)) == Pong(T, request_id=4)
    assert answer_to(Trigger("etl"), Triggered("etl", RUN)) == Triggered("etl", RUN)
    error = Error(ErrorCode.UNKNOWN_DAG, "no", T)
    assert answer_to(Trigger("x", request_id="t"), error) == attrs.evolve(error, request_id="t")
    with pytest.raises(TypeError, match="Ping is answered by Pong, not Triggered"):
        answer_to(Ping(), Triggered("etl", RUN))


def test_type_tables_are_inverse() -> None:
    assert {name: cls for cls, name in REQUEST_TYPES.items()} == CLIENT_MESSAGES
    assert {name: cls for cls, name in ANSWER_TYPES.items()} == SERVER_ANSWERS
    assert len(set(REQUEST_TYPES.values())) == len(REQUEST_TYPES)


# --------------------------------------------------------- the shapes on the wire


def test_answer_shapes_are_the_documented_ones() -> None:
    """docs/protocol.md, field for field and in this key order; nulls are written out."""
    assert to_wire(AuthSuccess(Role.OPERATE, 1234)) == {
        "type": "auth_success",
        "role": "operate",
        "seq": 1234,
    }
    assert encode(Subscribed(["a", "b"], request_id=1)) == (
        '{"type":"subscribed","dagIds":["a","b"],"requestId":1}'
    )
    assert encode(Triggered("etl", "r")) == '{"type":"triggered","dagId":"etl","runId":"r"}'
    assert encode(CancelAccepted("r")) == '{"type":"cancel_accepted","runId":"r"}'
    assert encode(RetryAccepted("r")) == '{"type":"retry_accepted","runId":"r"}'
    assert encode(ReplayComplete(1400)) == '{"type":"replay_complete","seq":1400}'
    assert encode(SnapshotComplete(5100)) == '{"type":"snapshot_complete","seq":5100}'
    assert encode(Pong(T)) == '{"type":"pong","timestamp":"2024-01-01T12:00:00.000Z"}'
    assert encode(Heartbeat(T)) == '{"type":"heartbeat","timestamp":"2024-01-01T12:00:00.000Z"}'
    assert list(to_wire(DagList([DAG]))["dags"][0]) == [
        "dagId",
        "description",
        "schedule",
        "nextRun",
        "steps",
        "tags",
        "params",
        "timezone",
        "paused",
        "fileError",
    ]
    assert to_wire(DagList([], [BrokenFile("d/x.toml", None, [FileProblem("m", "s")])])) == {
        "type": "dags",
        "dags": [],
        "brokenFiles": [
            {
                "file": "d/x.toml",
                "dagId": None,
                "problems": [{"message": "m", "step": "s", "field": None}],
            }
        ],
    }
    assert to_wire(DagList([DagSummary("m", "", None, None, [], [], {})]))["dags"][0] == {
        "dagId": "m",
        "description": "",
        "schedule": None,
        "nextRun": None,
        "steps": [],
        "tags": [],
        "params": {},
        "timezone": "UTC",
        "paused": False,
        "fileError": None,
    }
    run = RunRecord("etl", "r", RunStatus.RUNNING, {"d": "1"}, T, T + 1, None)
    assert to_wire(RunList([run]))["runs"] == [
        {
            "dagId": "etl",
            "runId": "r",
            "status": "running",
            "params": {"d": "1"},
            "queuedAt": "2024-01-01T12:00:00.000Z",
            "startedAt": "2024-01-01T12:00:01.000Z",
            "endedAt": None,
        }
    ]


def test_error_shapes() -> None:
    """An error has code, message and timestamp, and requestId when a request caused it;
    `oldestSeq` only with replay_unavailable, and then also when null."""
    assert encode(Error(ErrorCode.FORBIDDEN, "no", T, request_id=3)) == (
        '{"type":"error","code":"forbidden","message":"no",'
        '"timestamp":"2024-01-01T12:00:00.000Z","requestId":3}'
    )
    gone = Error(ErrorCode.REPLAY_UNAVAILABLE, "gone", T, oldest_seq=None)
    assert list(to_wire(gone)) == ["type", "code", "message", "timestamp", "oldestSeq"]
    assert to_wire(gone)["oldestSeq"] is None
    with pytest.raises(ValueError, match="replay_unavailable"):
        Error(ErrorCode.AUTH_FAILED, "x", T, oldest_seq=5)


def test_requests_leave_out_fields_at_their_defaults() -> None:
    assert to_wire(Auth("secret")) == {"type": "auth", "token": "secret"}
    assert to_wire(Subscribe(["etl"])) == {"type": "subscribe", "dagIds": ["etl"]}
    assert to_wire(ListRuns()) == {"type": "list_runs"}
    assert to_wire(ListRuns("etl", 5)) == {"type": "list_runs", "dagId": "etl", "limit": 5}
    assert parse_client_message('{"type": "list_runs"}') == ListRuns(None, 20)
    assert parse_client_message('{"type": "trigger", "dagId": "x"}') == Trigger("x", {})


# ------------------------------------------------------------------- strictness


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "pong"}',  # no timestamp
        '{"type": "pong", "timestamp": 5}',
        '{"type": "pong", "timestamp": "2024-01-01T12:00:00Z", "x": 1}',
        '{"type": "auth_success", "role": "admin", "seq": 1}',
        '{"type": "auth_success", "role": "read", "seq": "1"}',
        '{"type": "error", "code": "no_such_code", "message": "", "timestamp": null}',
        '{"type": "subscribed", "dagIds": "abc"}',
        '{"type": "dags", "dags": {"dagId": "x"}}',
        '{"type": "runs", "runs": [{"dagId": "x"}]}',
        "[]",
        '{"type": 5}',
        "not json",
        b"{}",
    ],
)
def test_the_client_parser_refuses_malformed_answers(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_server_message(text)


def test_the_client_parser_flags_unknown_types() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_server_message('{"type": "from_the_future"}')
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def test_a_dag_error_event_and_an_error_answer_share_the_type() -> None:
    event = parse_server_message(
        '{"type":"error","seq":3,"data":{"dagId":"a","runId":null,"stepId":null,'
        '"error":"bad cron","timestamp":"2024-01-01T12:00:00.000Z"}}'
    )
    assert type(event).__name__ == "ErrorEvent" and event.seq == 3
    answer = parse_server_message(encode(Error(ErrorCode.UNKNOWN_DAG, "no", T)))
    assert isinstance(answer, Error) and answer.code is ErrorCode.UNKNOWN_DAG


@pytest.mark.parametrize(
    ("text", "code", "request_id"),
    [
        ("{", ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "nope", "requestId": "a"}', ErrorCode.UNKNOWN_TYPE, "a"),
        ('{"type": "ping", "extra": 1, "requestId": 3}', ErrorCode.INVALID_MESSAGE, 3),
        ('{"type": "subscribe", "dagIds": [], "requestId": "b"}', ErrorCode.INVALID_MESSAGE, "b"),
        ('{"requestId": "c"}', ErrorCode.INVALID_MESSAGE, "c"),
        ('{"type": "replay", "since": -5, "requestId": 0}', ErrorCode.INVALID_MESSAGE, 0),
        ('{"type": "ping", "requestId": 1.5}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "replay", "since": true}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "list_runs", "limit": 1e2}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "subscribe", "dagIds": "abc"}', ErrorCode.INVALID_MESSAGE, None),
        (
            '{"type": "trigger", "dagId": "a", "params": {"a": null}}',
            ErrorCode.INVALID_MESSAGE,
            None,
        ),
    ],
)
def test_the_server_parser_refuses_with_a_code(
    text: str, code: ErrorCode, request_id: object
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    assert info.value.code is code
    assert info.value.request_id == request_id
    assert info.value.message


def test_field_names_in_errors_are_the_wire_names() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message('{"type": "subscribe", "dagIds": "x"}')
    assert "dagIds" in info.value.message and "dag_ids" not in info.value.message


# -------------------------------------------------------------------- the codes


def test_codes_are_the_wire_values() -> None:
    assert ErrorCode("replay_unavailable") is ErrorCode.REPLAY_UNAVAILABLE
    assert json.dumps(ErrorCode.AUTH_FAILED) == '"auth_failed"'
    assert [int(c) for c in CloseCode] == [1000, 1001, 1002, 1007, 1008, 1009, 1013]
    assert {r.value for r in Role} == {"read", "operate"}


def test_camel() -> None:
    assert camel("dag_ids") == "dagIds"
    assert camel("completion_percentage") == "completionPercentage"
    assert camel("seq") == "seq"


def test_messages_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Pong(T).timestamp = 0  # type: ignore[misc]
