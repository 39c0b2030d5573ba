"""Helpers for the JSON API tests: requests to a daemon's routes, answered in process (the
route table itself, no socket) or over a real socket with `http.client` (in a worker thread, so
the daemon in the test's own trio loop keeps running)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio
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
