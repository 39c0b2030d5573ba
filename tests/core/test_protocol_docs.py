"""docs/asyncapi.yaml and docs/protocol.md say what dagd.core.protocol does, and no more.

Every request, answer and DAG event class appears in the AsyncAPI document with exactly its
wire fields (and which of them are required), in the right direction; every error code,
close code, role and status appears there and in the prose, and nothing else does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from dagd.core.events import EVENT_TYPES
from dagd.core.model import RunStatus, StepStatus, TriggerRule
from dagd.core.pools import PoolUsage
from dagd.core.protocol.answers import (
    ANSWER_TYPES,
    BackfillAction,
    BackfillSlot,
    BrokenFile,
    DagSummary,
    Edge,
    FileProblem,
    StepDefinition,
    StepDetail,
    TriggerKind,
)
from dagd.core.protocol.codes import CloseCode, ErrorCode, Role
from dagd.core.protocol.converter import camel
from dagd.core.protocol.requests import REQUEST_TYPES
from dagd.core.records import AttemptRecord, RunRecord

DOCS = Path(__file__).resolve().parents[2] / "docs"
ASYNCAPI_TEXT = (DOCS / "asyncapi.yaml").read_text(encoding="utf-8")
ASYNCAPI = yaml.safe_load(ASYNCAPI_TEXT)
PROSE = (DOCS / "protocol.md").read_text(encoding="utf-8")
EVENT_OFF_WIRE = {"seq", "attempt", "outputs"}  # beside `data`, or dagd's own
OPTIONAL_ON_WIRE = {"worker", "handler", "waitingFor", "parentRunId"}  # on the wire only when set


def wire_fields(cls: type) -> set[str]:
    return {camel(f.name) for f in attrs.fields(cls)}


def required_fields(cls: type) -> set[str]:
    return {camel(f.name) for f in attrs.fields(cls) if f.default is attrs.NOTHING}


def messages_of(operation: str) -> dict[str, dict[str, Any]]:
    """The payloads an operation lists, by component name."""
    found = {}
    for ref in ASYNCAPI["operations"][operation]["messages"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        found[name] = ASYNCAPI["components"]["messages"][name]["payload"]
    return found


SENT = messages_of("sendRequest")
RECEIVED = messages_of("receiveMessage")


def test_it_is_asyncapi_3() -> None:
    assert re.search(r"^asyncapi:\s*['\"]?3\.", ASYNCAPI_TEXT, re.MULTILINE)
    assert str(ASYNCAPI["asyncapi"]).startswith("3.")


def test_every_channel_message_is_in_an_operation_and_back() -> None:
    channel = set(ASYNCAPI["channels"]["events"]["messages"])
    assert channel == set(SENT) | set(RECEIVED)
    assert channel == set(ASYNCAPI["components"]["messages"])


def test_requests_are_exactly_the_request_classes() -> None:
    documented = {payload["properties"]["type"]["const"]: payload for payload in SENT.values()}
    assert set(documented) == set(REQUEST_TYPES.values())
    for cls, name in REQUEST_TYPES.items():
        payload = documented[name]
        assert set(payload["properties"]) == {"type"} | wire_fields(cls), name
        assert set(payload["required"]) == {"type"} | required_fields(cls), name
        assert payload.get("additionalProperties") is False, name  # the server is strict


def _answers_and_events() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    answers, events = {}, {}
    for payload in RECEIVED.values():
        kind = payload["properties"]["type"]["const"]
        (events if "data" in payload["properties"] else answers)[kind] = payload
    return answers, events


def test_answers_are_exactly_the_answer_classes() -> None:
    answers, _ = _answers_and_events()
    assert set(answers) == set(ANSWER_TYPES.values())
    for cls, name in ANSWER_TYPES.items():
        payload = answers[name]
        assert set(payload["properties"]) == {"type"} | wire_fields(cls), name
        assert set(payload["required"]) == {"type"} | required_fields(cls), name


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema, or the component schema its `$ref` names."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    return resolve(ASYNCAPI["components"]["schemas"][ref.removeprefix(prefix)])


#: Objects nested in answers: (answer type, path to the object's schema, class).
NESTED = [
    ("dags", ("dags", "items"), DagSummary),
    ("dags", ("brokenFiles", "items"), BrokenFile),
    ("dags", ("brokenFiles", "items", "problems", "items"), FileProblem),
    ("runs", ("runs", "items"), RunRecord),
    ("dag", ("summary",), DagSummary),
    ("dag", ("steps", "items"), StepDefinition),
    ("dag", ("edges", "items"), Edge),
    ("run", ("record",), RunRecord),
    ("run", ("steps", "items"), StepDetail),
    ("run", ("steps", "items", "attempts", "items"), AttemptRecord),
    ("backfill_result", ("slots", "items"), BackfillSlot),
    ("pools", ("pools", "items"), PoolUsage),
]


@pytest.mark.parametrize(("answer", "path", "cls"), NESTED)
def test_nested_objects_are_exactly_their_classes(
    answer: str, path: tuple[str, ...], cls: type
) -> None:
    answers, _ = _answers_and_events()
    schema = answers[answer]
    for key in path:
        schema = resolve(schema)
        schema = schema["items"] if key == "items" else schema["properties"][key]
    schema = resolve(schema)
    assert set(schema["properties"]) == wire_fields(cls)
    assert set(schema["required"]) == required_fields(cls)


@pytest.mark.parametrize(
    ("name", "enum"),
    [
        ("triggerRule", TriggerRule),
        ("triggerKind", TriggerKind),
        ("backfillAction", BackfillAction),
    ],
)
def test_value_enums_are_the_enums(name: str, enum: type[Any]) -> None:
    assert ASYNCAPI["components"]["schemas"][name]["enum"] == [e.value for e in enum]


def test_events_are_exactly_the_event_classes() -> None:
    _, events = _answers_and_events()
    assert set(events) == set(EVENT_TYPES.values())
    for cls, name in EVENT_TYPES.items():
        payload = events[name]
        assert set(payload["properties"]) == {"type", "seq", "data"}
        assert set(payload["required"]) == {"type", "data"}  # no seq in a snapshot
        data = payload["properties"]["data"]
        on_wire = {camel(f.name) for f in attrs.fields(cls) if f.name not in EVENT_OFF_WIRE}
        assert set(data["properties"]) == on_wire, name
        assert set(data["required"]) == on_wire - OPTIONAL_ON_WIRE, name


def test_error_codes_in_asyncapi_are_exactly_error_code() -> None:
    answers, _ = _answers_and_events()
    codes = answers["error"]["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(c.value for c in ErrorCode)


def test_error_codes_in_the_prose_are_exactly_error_code() -> None:
    section = PROSE.split("## Errors", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)
    assert sorted(table) == sorted(c.value for c in ErrorCode)
    for code in ErrorCode:
        assert f"`{code.value}`" in PROSE, code


def test_close_codes_in_both_documents_are_exactly_close_code() -> None:
    section = PROSE.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    table = [int(n) for n in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)]
    assert sorted(table) == sorted(int(c) for c in CloseCode)
    described = ASYNCAPI["channels"]["events"]["description"]
    assert sorted(int(n) for n in re.findall(r"\b(1\d{3})\b", described)) == sorted(
        int(c) for c in CloseCode
    )


def test_roles_and_statuses_are_the_enums() -> None:
    answers, _ = _answers_and_events()
    assert sorted(answers["auth_success"]["properties"]["role"]["enum"]) == sorted(
        r.value for r in Role
    )
    schemas = ASYNCAPI["components"]["schemas"]
    assert schemas["runStatus"]["enum"] == [s.value for s in RunStatus]
    assert schemas["stepStatus"]["enum"] == [s.value for s in StepStatus]
    for role in Role:
        assert f"`{role.value}`" in PROSE


def test_every_message_type_is_named_in_the_prose() -> None:
    for name in [*REQUEST_TYPES.values(), *ANSWER_TYPES.values(), *EVENT_TYPES.values()]:
        assert f'"{name}"' in PROSE or f"`{name}`" in PROSE, name
