"""Helpers of the front door tests: a served daemon with a test route table, and raw HTTP
over trio sockets, parsed with an h11 client so nothing in a client library hides what the
server sent."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import h11
import orjson
import trio
from wshelp import running, server_of

from dagd.net.http import static
from dagd.net.http.message import HttpRequest, HttpResponse, Route, json_response
from dagd.net.http.router import Router
from dagd.net.server import Server

#: Headers every response carries.
SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


async def echo(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
    return json_response(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "params": params,
            "body": request.body.decode("latin-1"),
            "peer": request.peer,
            "host": request.header("host"),
        },
    )


async def boom(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
    raise RuntimeError("a handler's bug")


async def bad_header(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
    return HttpResponse(200, b"x", headers=(("x-bad", "a\r\nset-cookie: evil=1"),))


async def teapot(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
    return json_response(418, {"code": "teapot"})


TEST_ROUTES = [
    Route(frozenset({"GET", "POST"}), "/echo", echo),
    Route(frozenset({"GET"}), "/items/{item_id}", echo),
    Route(frozenset({"GET"}), "/boom", boom),
    Route(frozenset({"GET"}), "/bad-header", bad_header),
    Route(frozenset({"GET"}), "/teapot", teapot),
]


@contextlib.asynccontextmanager
async def served(tmp_path: Path, server: str = "") -> AsyncIterator[tuple[Server, int]]:
    """A daemon on 127.0.0.1 port 0 whose front door answers TEST_ROUTES and the dashboard's
    files."""
    async with running(tmp_path, server=server) as daemon:
        srv = server_of(daemon)
        assert srv.port is not None
        srv.door.router = Router([*TEST_ROUTES, *static.routes(srv.http)])
        yield srv, srv.port


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(
    target: str,
    method: str = "GET",
    host: str = "127.0.0.1",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse(data: bytes, methods: list[str] | None = None) -> list[Reply]:
    """The responses in `data` (to requests of `methods`, GET by default), in order."""
    client = h11.Connection(h11.CLIENT)
    if data:  # b"" would tell h11 the connection closed
        client.receive_data(data)
    replies: list[Reply] = []
    for method in methods or ["GET"] * 100:
        # Pretend we sent the request, so h11 frames the response (HEAD: no body).
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        if client.our_state is not h11.IDLE:
            break
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode(): v.decode() for k, v in head.headers}
                replies.append(Reply(head.status_code, headers, body))
                break
            else:  # NEED_DATA, PAUSED, ConnectionClosed: no more whole responses
                return replies
    return replies


async def read_until_closed(stream: trio.abc.Stream, bound: float = 2.0) -> bytes:
    """Everything until the server closes; fails if it does not close within `bound` s."""
    received = b""
    with trio.fail_after(bound):
        with contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def read_replies(
    stream: trio.abc.Stream, count: int, methods: list[str] | None = None, bound: float = 2.0
) -> list[Reply]:
    """Read until `count` whole responses arrived (the connection stays open)."""
    received = b""
    with trio.fail_after(bound):
        while len(replies := parse(received, methods)) < count:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed after {len(replies)} responses"
            received += chunk
    return replies


async def exchange(port: int, data: bytes, methods: list[str] | None = None) -> list[Reply]:
    """Send `data` on a new connection; the responses until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(data)
        return parse(await read_until_closed(stream), methods)


def check_headers(reply: Reply) -> None:
    """What every response of the front door carries."""
    for name, value in SECURITY.items():
        assert reply.headers.get(name) == value, (name, reply.headers)
    csp = reply.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "date" in reply.headers
    assert "set-cookie" not in reply.headers
    if reply.status != 304:
        assert int(reply.headers["content-length"]) == len(reply.body) or reply.body == b""
