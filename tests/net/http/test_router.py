"""The route table and the served-name rules, without a network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from dagd.core.config import ConfigError, ServerConfig, parse_config
from dagd.net.http.hosts import host_name, is_own_origin, is_served, served_names
from dagd.net.http.message import HttpRequest, HttpResponse, Route
from dagd.net.http.router import Found, MethodNotAllowed, Router, split_path


def handler(name: str):  # type: ignore[no-untyped-def]
    async def answer(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        return HttpResponse(200, name.encode())

    answer.__name__ = name
    return answer


ROUTES = [
    Route(frozenset({"GET"}), "/", handler("index")),
    Route(frozenset({"GET"}), "/api/v1/runs", handler("runs")),
    Route(frozenset({"GET"}), "/api/v1/runs/stats", handler("stats")),
    Route(frozenset({"GET", "DELETE"}), "/api/v1/runs/{run_id}", handler("run")),
    Route(frozenset({"POST"}), "/api/v1/runs/{run_id}/retry", handler("retry")),
    Route(frozenset({"GET"}), "/api/v1/{kind}/{name}/steps", handler("steps")),
    Route(frozenset({"GET"}), "/api/v1/dags/{dag_id}/steps", handler("dag_steps")),
]


def find(method: str, path: str) -> tuple[str, dict[str, str]] | str | None:
    found = Router(ROUTES).match(method, split_path(path))
    if isinstance(found, Found):
        return found.handler.__name__, dict(found.params)
    if isinstance(found, MethodNotAllowed):
        return f"405 {found.allow}"
    return None


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", ("index", {})),
        ("HEAD", "/", ("index", {})),
        ("GET", "/api/v1/runs", ("runs", {})),
        ("GET", "/api/v1/runs/stats", ("stats", {})),
        ("GET", "/api/v1/runs/r1", ("run", {"run_id": "r1"})),
        ("HEAD", "/api/v1/runs/r1", ("run", {"run_id": "r1"})),
        ("DELETE", "/api/v1/runs/r1", ("run", {"run_id": "r1"})),
        ("POST", "/api/v1/runs/r1/retry", ("retry", {"run_id": "r1"})),
        ("GET", "/api/v1/dags/etl/steps", ("dag_steps", {"dag_id": "etl"})),
        ("GET", "/api/v1/x/etl/steps", ("steps", {"kind": "x", "name": "etl"})),
        # the literal pattern owns its path: no fall-through to {run_id}
        ("DELETE", "/api/v1/runs/stats", "405 GET, HEAD"),
        ("POST", "/api/v1/runs/r1", "405 DELETE, GET, HEAD"),
        ("GET", "/api/v1/runs/r1/retry", "405 POST"),
        ("GET", "/api/v1/runs/", None),  # {run_id} never captures an empty segment
        ("GET", "/api/v1/runs/r1/", None),
        ("GET", "/api/v1", None),
        ("GET", "/nope", None),
    ],
)
def test_routes_match(method: str, path: str, expected: object) -> None:
    assert find(method, path) == expected


@pytest.mark.parametrize(
    "routes",
    [
        [
            Route(frozenset({"GET"}), "/a", handler("a")),
            Route(frozenset({"GET", "POST"}), "/a", handler("b")),
        ],
        [Route(frozenset({"GET"}), "a", handler("a"))],
        [Route(frozenset({"GET"}), "/a/{x}/{x}", handler("a"))],
        [Route(frozenset({"GET"}), "/a/b{x}", handler("a"))],
        [Route(frozenset({"GET"}), "/a/{1x}", handler("a"))],
    ],
)
def test_a_bad_table_is_refused_at_start(routes: list[Route]) -> None:
    with pytest.raises(ValueError, match="route"):
        Router(routes)


served = served_names(ServerConfig(hosts=("dagd.example.com",)))


def test_served_names() -> None:
    assert served == {"127.0.0.1", "localhost", "::1", "dagd.example.com"}
    assert served_names(ServerConfig(host="::1")) == {"127.0.0.1", "localhost", "::1"}
    assert served_names(ServerConfig(host="0.0.0.0")) == {"127.0.0.1", "localhost", "::1"}
    assert served_names(ServerConfig(host="10.1.2.3")) == {"10.1.2.3"}
    assert served_names(ServerConfig(host="Box.Example.", hosts=("a.b",))) == {"box.example", "a.b"}


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1:3000", "127.0.0.1"),
        ("[::1]:3000", "::1"),
        ("[::1]", "::1"),
        ("Dagd.Example.COM.", "dagd.example.com"),
        ("localhost", "localhost"),
        ("localhost:", None),
        ("localhost:80x", None),
        ("localhost:1234567", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
        (":3000", None),
    ],
)
def test_host_name(host: str, name: str | None) -> None:
    assert host_name(host) == name


def test_own_origin_needs_a_served_host() -> None:
    assert is_own_origin("http://127.0.0.1:3000", "127.0.0.1:3000", "http", served)
    assert is_own_origin("HTTP://LOCALHOST:3000", "localhost:3000", "http", served)
    assert is_own_origin("https://dagd.example.com", "dagd.example.com", "https", served)
    assert not is_own_origin("http://dagd.example.com", "dagd.example.com", "https", served)
    assert not is_own_origin("http://evil.example:3000", "evil.example:3000", "http", served)
    assert not is_own_origin("http://127.0.0.1:3000", None, "http", served)
    assert not is_served(None, served)


def test_server_http_keys_parse_and_are_checked() -> None:
    config = parse_config(
        '[server]\nhosts = ["dagd.example.com", "10.0.0.5", "::1"]\n'
        'max_header_bytes = 8192\nmax_body_bytes = 100\nkeepalive_timeout = "5s"\n',
        Path("."),
    )
    assert config.server.hosts == ("dagd.example.com", "10.0.0.5", "::1")
    assert (config.server.max_header_bytes, config.server.max_body_bytes) == (8192, 100)
    assert config.server.keepalive_timeout == 5.0
    with pytest.raises(ConfigError) as caught:
        parse_config(
            '[server]\nhosts = ["http://x", "x:80", "a b"]\nmax_header_bytes = 10\n'
            "max_body_bytes = 0\nkeepalive_timeout = -1\n",
            Path("."),
        )
    problems = caught.value.problems
    assert len(problems) == 6, problems
    assert sum("server.hosts" in p for p in problems) == 3
    assert any("server.max_header_bytes: must be from 1024" in p for p in problems)
