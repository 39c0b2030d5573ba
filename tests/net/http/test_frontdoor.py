"""The front door: plain HTTP on the WebSocket's port, seen from raw sockets and http.client
against a real daemon on 127.0.0.1 port 0 (docs/http.md states the rules)."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
import trio
from httphelp import (
    check_headers,
    exchange,
    parse,
    read_replies,
    read_until_closed,
    request,
    served,
)

# ------------------------------------------------------------------ statuses


REFUSED = {
    "unknown path": (request("/nope"), 404),
    "wrong method": (request("/echo", "DELETE"), 405),
    "plain GET of the endpoint": (request("/api/v1/ws"), 426),
    "POST to the endpoint": (request("/api/v1/ws", "POST", body=b"x"), 405),
    "garbage": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(200)), 400),
    "a bad request line": (b"GET /a b c HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    "no Host in HTTP/1.1": (b"GET /echo HTTP/1.1\r\n\r\n", 400),
    "a foreign Host": (request("/echo", host="evil.example:3000"), 421),
    "a foreign Host, no port": (request("/", host="rebind.example"), 421),
    "a body over the limit": (request("/echo", "POST", body=b"x" * 2000), 413),
    "headers over the limit": (request("/echo", headers=(("x-big", "a" * 5000),)), 431),
    "a handler's exception": (request("/boom"), 500),
    "a handler's invalid header": (request("/bad-header"), 500),
    "not a path": (b"GET http://127.0.0.1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    # RFC 9112 section 6.1: the framing a proxy and dagd could disagree on (smuggling)
    "Content-Length and Transfer-Encoding": (
        request(
            "/echo", "POST", headers=(("Transfer-Encoding", "chunked"), ("Content-Length", "5"))
        )
        + b"0\r\n\r\n",
        400,
    ),
    "two Origins": (
        request("/echo", headers=(("Origin", "http://a.example"), ("Origin", "http://b"))),
        400,
    ),
    "HTTP/2.0 request line": (b"GET /echo HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505),
    "HTTP/2 connection preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
}


async def test_refused_requests_get_their_status_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    limits = "max_body_bytes = 1000\nmax_header_bytes = 4096"
    async with served(tmp_path, limits) as (server, port):
        for case, (data, status) in REFUSED.items():
            replies = await exchange(port, data)  # fails unless the server closes
            assert [r.status for r in replies] == [status], case
            reply = replies[0]
            check_headers(reply)
            assert reply.headers["connection"] == "close", case
            assert reply.headers["content-type"] == "application/json", case
            assert isinstance(reply.json()["message"], str), case
            assert "Traceback" not in reply.body.decode(), case
        assert server.http_requests == len(REFUSED)  # each refusal counts as answered
        # the refusals' extras
        [r] = await exchange(port, request("/echo", "DELETE"))
        assert r.headers["allow"] == "GET, HEAD, POST"
        [r] = await exchange(port, request("/api/v1/ws"))
        assert r.headers["upgrade"] == "websocket"
        # and the daemon still serves
        [ok] = await exchange(port, request("/echo", headers=(("connection", "close"),)))
        assert ok.status == 200
        assert server.http_connections == 0
        assert server.handshaking == 0


async def test_an_upgrade_for_another_path_is_404_as_always(tmp_path: Path) -> None:
    upgrade = (("Upgrade", "websocket"), ("Connection", "Upgrade"))
    async with served(tmp_path) as (server, port):
        for path in ("/", "/echo", "/api/v1/wsx"):
            [reply] = await exchange(port, request(path, headers=upgrade))
            assert reply.status == 404
            assert reply.body == b"not found: the endpoint is /api/v1/ws"
        assert server.http_requests == 3


async def test_a_handler_answer_keeps_the_connection(tmp_path: Path) -> None:
    """A handler's own 4xx is an answer, not a refusal."""
    async with served(tmp_path) as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request("/teapot") + request("/echo?a=1&a=2&b="))
            teapot, echo = await read_replies(stream, 2)
        assert teapot.status == 418 and "connection" not in teapot.headers
        assert echo.status == 200
        assert echo.json()["query"] == {"a": ["1", "2"], "b": [""]}


async def test_path_parameters_are_decoded_segments(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        replies = await exchange(
            port,
            request("/items/a%2Fb%20c")
            + request("/items/x/y")
            + request("/items/")
            + request("/echo", headers=(("connection", "close"),)),
        )
        assert replies[0].status == 200
        assert replies[0].json()["params"] == {"item_id": "a/b c"}
        assert [r.status for r in replies[1:]] == [404]  # and closed


# ------------------------------------------------------------ persistent connections


async def test_keep_alive_serves_two_requests_on_one_connection(tmp_path: Path) -> None:
    async with served(tmp_path) as (server, port):

        def two_requests() -> tuple[list[int], bool, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/echo?n=1")
                first = conn.getresponse()
                first.read()
                sock = conn.sock
                conn.request("POST", "/echo", body=b"hello")
                second = conn.getresponse()
                body = second.read().decode()
                return [first.status, second.status], conn.sock is sock, body
            finally:
                conn.close()

        statuses, same_socket, body = await trio.to_thread.run_sync(two_requests)
        assert statuses == [200, 200]
        assert same_socket
        assert '"body":"hello"' in body
        assert '"peer":"127.0.0.1:' in body
        assert server.http_requests >= 2


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        data = b"".join(request(f"/echo?n={n}") for n in range(5))
        data += request("/echo?n=last", headers=(("Connection", "close"),))
        replies = await exchange(port, data)
        assert [r.json()["query"]["n"][0] for r in replies] == ["0", "1", "2", "3", "4", "last"]
        assert replies[-1].headers["connection"] == "close"
        for reply in replies:
            check_headers(reply)


async def test_http_1_0_closes_after_its_response(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        [reply] = await exchange(port, b"GET /echo HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert reply.status == 200


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    async with served(tmp_path, 'keepalive_timeout = "300ms"') as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request("/echo"))
            await read_replies(stream, 1)
            assert server.http_connections == 1
            start = trio.current_time()
            assert await read_until_closed(stream, 3.0) == b""
            assert 0.2 < trio.current_time() - start < 2.5
        with trio.fail_after(2):
            while server.http_connections:
                await trio.sleep(0.01)


async def test_head_is_get_without_the_body(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        data = request("/", "HEAD") + request("/", headers=(("connection", "close"),))
        head, get = await exchange_methods(port, data, ["HEAD", "GET"])
        assert head.status == get.status == 200
        assert head.body == b""
        assert head.headers["content-length"] == str(len(get.body)) != "0"
        assert head.headers["etag"] == get.headers["etag"]


async def test_a_refused_head_gets_its_status_without_a_body(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        for target, status in [("/nope", 404), ("/api/v1/ws", 426), ("/boom", 500)]:
            [reply] = await exchange_methods(port, request(target, "HEAD"), ["HEAD"])
            assert reply.status == status, target
            assert reply.body == b""
            assert int(reply.headers["content-length"]) > 0
            check_headers(reply)


async def exchange_methods(port: int, data: bytes, methods: list[str]) -> list:  # type: ignore[type-arg]
    return await exchange(port, data, methods)


# ------------------------------------------------------------------- slow clients


async def test_a_slow_request_head_is_cut_off(tmp_path: Path) -> None:
    async with served(tmp_path, 'handshake_timeout = "300ms"') as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
            start = trio.current_time()
            assert await read_until_closed(stream, 3.0) == b""
            assert trio.current_time() - start < 2.5
        # the same on a kept connection: the clock starts at the next request's first byte
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request("/echo"))
            await read_replies(stream, 1)
            await stream.send_all(b"GET /echo HTTP/1.1\r\n")
            assert await read_until_closed(stream, 3.0) == b""
        assert server.handshaking == 0


async def test_a_stalled_body_gets_408(tmp_path: Path) -> None:
    async with served(tmp_path, 'handshake_timeout = "300ms"') as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            head = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc"
            await stream.send_all(head)
            [reply] = parse(await read_until_closed(stream, 3.0))
        assert reply.status == 408
        check_headers(reply)


async def test_a_chunked_body_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    async with served(tmp_path, "max_body_bytes = 1000") as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(2000):  # 1 MB if the server kept reading
                    await stream.send_all(b"200\r\n" + b"x" * 0x200 + b"\r\n")
                    sent += 1
                    await trio.sleep(0)
                raise trio.BrokenResourceError  # never cut off: fails below
            assert sent < 2000
        # (what arrived before the reset is the 413, when the kernel kept it)


async def test_a_body_over_the_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """`Expect: 100-continue` with a Content-Length over the limit: 413 at once."""
    async with served(tmp_path, "max_body_bytes = 1000") as (_server, port):
        data = (
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        [reply] = await exchange(port, data)
        assert reply.status == 413


async def test_100_continue_then_the_body(tmp_path: Path) -> None:
    async with served(tmp_path) as (_server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            with trio.fail_after(2):
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            [reply] = await read_replies(stream, 1)
        assert reply.json()["body"] == "hello"


# ---------------------------------------------------------------------- capacity


async def test_http_connections_count_in_max_connections(tmp_path: Path) -> None:
    async with served(tmp_path, "max_connections = 2") as (server, port):
        held = []
        for _ in range(2):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(request("/echo"))
            await read_replies(stream, 1)
            held.append(stream)
        assert server.http_connections == 2
        [reply] = await exchange(port, request("/echo"))
        assert reply.status == 503
        check_headers(reply)
        assert server.http_requests == 3  # the busy 503 too
        for stream in held:
            await stream.aclose()
        with trio.fail_after(2):
            while server.http_connections:
                await trio.sleep(0.01)
        [reply] = await exchange(port, request("/echo", headers=(("connection", "close"),)))
        assert reply.status == 200


async def test_shutting_down_answers_503_and_closes(tmp_path: Path) -> None:
    async with served(tmp_path) as (server, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request("/echo"))
            await read_replies(stream, 1)
            await server.close_all()
            await stream.send_all(request("/echo"))
            [reply] = parse(await read_until_closed(stream))
        assert reply.status == 503
