"""docs/openapi.yaml says what the JSON API does, and no more.

Every route of dagd/net/http/api.py is documented with its methods and path parameters, and
every documented path is routed; each object schema has exactly its protocol class's wire
fields (and required ones); the schemas the WebSocket shares are docs/asyncapi.yaml's own;
every error code a response lists answers with that status. (Real responses are validated
against the document in tests/net/http/test_api.py.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from apihelp import OPENAPI, resolve
from jsonschema import Draft202012Validator

from dagd.core.model import RunStatus, StepStatus, TriggerRule
from dagd.core.protocol import answers, requests
from dagd.core.protocol.answers import BackfillAction, TriggerKind
from dagd.core.protocol.converter import camel
from dagd.core.records import AttemptRecord, RunRecord
from dagd.net.auth import TokenBook
from dagd.net.http.api import STATUS, JsonApi

DOCS = Path(__file__).resolve().parents[3] / "docs"
ASYNCAPI = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = OPENAPI["components"]["schemas"]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def routed() -> set[tuple[str, str]]:
    """(pattern, method) of every route the JSON API serves."""
    routes = JsonApi(None, TokenBook([])).routes()  # type: ignore[arg-type]
    return {(route.pattern, method) for route in routes for method in route.methods}


def documented() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in OPENAPI["paths"].items()
        for method in item
        if method in METHODS
    }


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in OPENAPI["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_it_is_openapi_3_1_and_a_valid_schema_everywhere() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    for name, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)  # raises on a malformed schema
        assert name


def test_every_route_is_documented_and_every_documented_path_routed() -> None:
    assert routed() == documented()


@pytest.mark.parametrize(("path", "method", "operation"), operations())
def test_path_parameters_are_the_templates(
    path: str, method: str, operation: dict[str, Any]
) -> None:
    params = [resolve(p) for p in operation.get("parameters", [])]
    in_path = {p["name"] for p in params if p["in"] == "path"}
    assert in_path == set(re.findall(r"\{(\w+)\}", path))
    assert all(p["required"] for p in params if p["in"] == "path")
    assert operation["operationId"] and operation["summary"]
    for status, response in operation["responses"].items():
        assert re.fullmatch(r"[2-5]\d\d", status)
        assert resolve(response)["description"]


def wire_fields(cls: type) -> set[str]:
    return {camel(f.name) for f in attrs.fields(cls)} - {"requestId"}


def required_fields(cls: type) -> set[str]:
    return {camel(f.name) for f in attrs.fields(cls) if f.default is attrs.NOTHING}


#: Each documented object and the protocol class it is on the wire.
CLASSES: list[tuple[str, type]] = [
    ("dagList", answers.DagList),
    ("runList", answers.RunList),
    ("dagDetail", answers.DagDetail),
    ("runDetail", answers.RunDetail),
    ("triggered", answers.Triggered),
    ("runAccepted", answers.CancelAccepted),
    ("runAccepted", answers.RetryAccepted),
    ("paused", answers.Paused),
    ("unpaused", answers.Unpaused),
    ("backfillResult", answers.BackfillResult),
    ("dagSummary", answers.DagSummary),
    ("runRecord", RunRecord),
    ("stepDefinition", answers.StepDefinition),
    ("edge", answers.Edge),
    ("attempt", AttemptRecord),
    ("stepDetail", answers.StepDetail),
    ("backfillSlot", answers.BackfillSlot),
    ("brokenFile", answers.BrokenFile),
    ("fileProblem", answers.FileProblem),
]


@pytest.mark.parametrize(("name", "cls"), CLASSES)
def test_objects_are_exactly_their_classes(name: str, cls: type) -> None:
    schema = SCHEMAS[name]
    assert set(schema["properties"]) == wire_fields(cls)
    assert set(schema["required"]) == required_fields(cls) - {"worker"}


@pytest.mark.parametrize(
    ("name", "cls"), [("triggerBody", requests.Trigger), ("backfillBody", requests.Backfill)]
)
def test_request_bodies_are_their_requests_without_path_fields(name: str, cls: type) -> None:
    schema = SCHEMAS[name]
    assert set(schema["properties"]) == wire_fields(cls) - {"dagId"}
    assert set(schema.get("required", [])) == required_fields(cls) - {"dagId"}
    assert schema["additionalProperties"] is False  # the API refuses unknown fields


def test_shared_schemas_are_the_asyncapi_documents_own() -> None:
    """What both documents describe is described once, the same: a DAG or a run has one
    shape on both doors."""
    theirs = ASYNCAPI["components"]["schemas"]
    shared = set(SCHEMAS) & set(theirs)
    assert {"dagSummary", "runRecord", "stepDetail", "attempt", "timestamp"} <= shared
    for name in shared:
        assert SCHEMAS[name] == theirs[name], name


@pytest.mark.parametrize(
    ("name", "enum"),
    [
        ("runStatus", RunStatus),
        ("stepStatus", StepStatus),
        ("triggerRule", TriggerRule),
        ("triggerKind", TriggerKind),
        ("backfillAction", BackfillAction),
    ],
)
def test_value_enums_are_the_enums(name: str, enum: type[Any]) -> None:
    assert SCHEMAS[name]["enum"] == [e.value for e in enum]


def error_codes() -> list[tuple[str, str, int, str]]:
    """(path, method, status, code) of every error code a documented response lists."""
    found = []
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            [(_, content)] = resolve(response)["content"].items()
            schema = content["schema"]
            assert schema["$ref"] == "#/components/schemas/error"
            for code in schema["properties"]["code"]["enum"]:
                found.append((path, method, int(status), code))
    return found


def test_every_listed_error_code_answers_with_its_status() -> None:
    listed = error_codes()
    for path, method, status, code in listed:
        assert STATUS[code] == status, (path, method, code)
    # Every code of the table is answered somewhere, but the subscriber's.
    assert {code for *_, code in listed} == set(STATUS) - {"slow_consumer"}


def test_every_operation_documents_auth_and_bad_input() -> None:
    for path, method, operation in operations():
        responses = operation["responses"]
        assert "400" in responses, (path, method)
        if operation.get("security") == []:  # public: the document itself
            assert "401" not in responses and path == "/api/v1/openapi.yaml"
            continue
        assert "401" in responses, (path, method)
        changes = method != "get"
        assert ("403" in responses) == changes, (path, method)
