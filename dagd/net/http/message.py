"""One HTTP request and its response as plain values, and a route of the route table.

The front door (dagd/net/http/frontdoor.py) reads a request with h11 into an `HttpRequest`,
finds its `Route`, awaits the handler and writes the `HttpResponse` back. Handlers never see
h11 or the socket, so each route module is a set of async functions from request to response,
tested without a network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import orjson


@attrs.frozen
class HttpRequest:
    """A request as a route sees it.

    `method` is upper-case (a `HEAD` reaches the `GET` route; the front door drops the body).
    `path` is the percent-decoded path without the query; `query` maps each query name to its
    values in order; `headers` maps lower-case names to values (repeated headers joined with
    ", "); `body` is at most the front door's body limit (bytes); `peer` is "host:port".
    """

    method: str
    path: str
    query: Mapping[str, list[str]] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    peer: str = ""

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case), or None."""
        return self.headers.get(name.lower())

    def arg(self, name: str) -> str | None:
        """The first value of query parameter `name`, or None."""
        values = self.query.get(name)
        return values[0] if values else None


@attrs.frozen
class HttpResponse:
    """A response: status, body bytes, content type, and any further headers.

    The front door adds `content-length`, `date`, the security headers and `connection`.
    """

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    """A response whose body is `value` as compact JSON (orjson)."""
    return HttpResponse(status, orjson.dumps(value), "application/json", headers)


def error_response(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    """A JSON error body `{"code": ..., "message": ...}`, the shape of every 4xx and 5xx
    answer of the JSON API (docs/openapi.yaml)."""
    return json_response(status, {"code": code, "message": message}, headers)


#: A route's handler: the request and the path parameters its pattern captured.
Handler = Callable[[HttpRequest, Mapping[str, str]], Awaitable[HttpResponse]]


@attrs.frozen
class Route:
    """One entry of the route table.

    `pattern` is a path whose `{name}` segments capture one path segment each, e.g.
    `/api/v1/runs/{run_id}`; `methods` are the methods it answers (`GET` also answers
    `HEAD`). A path that matches a pattern but none of its methods is answered 405 with an
    `Allow` header.
    """

    methods: frozenset[str]
    pattern: str
    handler: Handler
