"""Helpers for the JSON API tests: requests to a daemon's routes, answered in process (the
route table itself, no socket) or over a real socket with `http.client` (in a worker thread, so
the daemon in the test's own trio loop keeps running)."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from wshelp import OP_TOKEN

from dagd.net.http.message import HttpRequest, HttpResponse, Route


@attrs.frozen
class Answer:
    """A response as a client sees it: status, headers (lower-case names), body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error body's code (None for a success)."""
        if self.status < 400:
            return None
        value = self.json()
        assert set(value) == {"code", "message"}, value
        assert isinstance(value["message"], str) and value["message"]
        code: str = value["code"]
        return code


def _match(pattern: str, path: str) -> dict[str, str] | None:
    want, got = pattern.split("/"), path.split("/")
    if len(want) != len(got):
        return None
    found = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{") and w.endswith("}"):
            if not g:
                return None
            found[w[1:-1]] = g
        elif w != g:
            return None
    return found


async def call_route(
    routes: Sequence[Route],
    method: str,
    path: str,
    *,
    body: bytes | str | dict[str, Any] | None = None,
    token: str | None = OP_TOKEN,
    query: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    peer: str = "127.0.0.1:40000",
) -> Answer:
    """Answer a request with the route table's handler, as the front door would after
    parsing it (path already percent-decoded, one segment per `{name}`)."""
    all_headers = {k.lower(): v for k, v in (headers or {}).items()}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body or b""
    request = HttpRequest(
        method,
        path,
        dict(query or {}),
        all_headers,
        data.encode() if isinstance(data, str) else data,
        peer,
    )
    for route in routes:
        params = _match(route.pattern, path)
        if params is not None and method in route.methods:
            response: HttpResponse = await route.handler(request, params)
            found = {"content-type": response.content_type, **dict(response.headers)}
            return Answer(response.status, found, response.body)
    raise AssertionError(f"no route for {method} {path}")


async def http_call(
    base: str,
    method: str,
    target: str,
    *,
    body: bytes | str | dict[str, Any] | None = None,
    token: str | None = OP_TOKEN,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request over a real socket to `base` ("http://127.0.0.1:PORT"), `target` as sent
    (path and query, not re-encoded)."""
    host_port = base.removeprefix("http://").rstrip("/")
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if isinstance(data, str):
        data = data.encode()

    def send() -> Answer:
        conn = http.client.HTTPConnection(host_port, timeout=timeout)
        try:
            conn.request(method, target, body=data, headers=all_headers)
            response = conn.getresponse()
            payload = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, found, payload)
        finally:
            conn.close()

    return await trio.to_thread.run_sync(send)


#: docs/openapi.yaml, read once.
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
OPENAPI: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
_URI = "urn:dagd:openapi"


def _closed(schema: Any) -> Any:
    """`schema` with every object that lists its properties closed to others: a response
    validated against it may carry no field the document does not name."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: _closed(value) for key, value in schema.items()}
    if "properties" in found and "additionalProperties" not in found and "$ref" not in found:
        found["additionalProperties"] = False
    return found


_REGISTRY: Registry[Any] = Registry().with_resource(
    _URI, Resource.from_contents(_closed(OPENAPI), default_specification=DRAFT202012)
)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A node of the document, or the node its `$ref` points to."""
    while "$ref" in node and len(node) == 1:
        target: Any = OPENAPI
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The documented path template matching `path` (percent-decoded per segment) and its
    operation for `method`, or None."""
    segments = "/".join(urllib.parse.unquote(s).replace("/", "%2F") for s in path.split("/"))
    for template, item in OPENAPI["paths"].items():
        if _match(template, segments) is not None and method.lower() in item:
            return template, item[method.lower()]
    return None


def operation_of(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """`find_operation`, which must find one."""
    found = find_operation(method, path)
    assert found is not None, f"{method} {path} is not in docs/openapi.yaml"
    return found


def check_documented(method: str, path: str, answer: Answer) -> None:
    """Assert that docs/openapi.yaml documents `answer` as an answer to `method path`: its
    status, content type, headers, and a body valid against the schema (closed objects)."""
    template, operation = operation_of(method, path)
    responses = operation["responses"]
    key = str(answer.status)
    assert key in responses, f"{method} {template}: status {key} is not documented"
    response = resolve(responses[key])
    content_type = answer.headers["content-type"].split(";")[0]
    assert content_type in response["content"], (method, template, key, content_type)
    for header in response.get("headers", {}):
        assert header.lower() in answer.headers, (method, template, key, header)
    pointer = "/".join(
        part.replace("~", "~0").replace("/", "~1")
        for part in ("paths", template, method.lower(), "responses", key)
    )
    if "$ref" in responses[key]:
        pointer = responses[key]["$ref"].removeprefix("#/")
    if content_type == "application/json":
        schema = {"$ref": f"{_URI}#/{pointer}/content/application~1json/schema"}
        validator = Draft202012Validator(schema, registry=_REGISTRY)
        errors = [e.message for e in validator.iter_errors(answer.json())]
        assert not errors, (method, template, key, errors[:3])
