"""The front door and the WebSocket on one port: upgrades reach the WebSocket server as before,
and a browser page's own origin may open it only from a Host that dagd serves."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
from httphelp import check_headers, exchange, parse, read_replies, read_until_closed, request
from wshelp import (
    KINDS,
    Aio,
    harness,
    make_config,
    needs_openssl,
    running,
    self_signed_cert,
    server_of,
)

from dagd.net.http.frontdoor import quick_upgrade

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(host: str, origin: str | None = None, path: str = "/api/v1/ws") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def handshake_status(port: int, data: bytes) -> int:
    """The status line's code of the server's answer to a raw handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(2):
            while b"\r\n" not in received:
                chunk = await stream.receive_some()
                assert chunk, received
                received += chunk
    return int(received.split(b" ", 2)[1])


@pytest.mark.parametrize("kind", KINDS)
async def test_websocket_clients_work_after_http_on_the_same_port(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        port = h.server.port
        assert port is not None
        # plain HTTP first, on other connections: one kept open, a refusal, a garbage write
        kept = await trio.open_tcp_stream("127.0.0.1", port)
        async with kept:
            await kept.send_all(request("/"))
            [page] = await read_replies(kept, 1)
            assert page.status == 200
            assert (await exchange(port, request("/nope")))[0].status == 404
            assert (await exchange(port, b"\x00\xff garbage\r\n\r\n"))[0].status == 400
            client = await h.connect(kind)
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            assert h.server.connections == 1
            assert h.server.http_connections == 1
            # and HTTP still works beside the WebSocket
            await kept.send_all(request("/", headers=(("Connection", "close"),)))
            assert (await read_replies(kept, 1))[0].status == 200


async def test_the_pages_own_origin_may_open_the_websocket(tmp_path: Path) -> None:
    config = make_config(tmp_path, server='hosts = ["dagd.example.com"]')
    async with running(tmp_path, config=config) as daemon:
        port = server_of(daemon).port
        assert port is not None
        own = [
            (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
            (f"localhost:{port}", f"http://localhost:{port}"),
            (f"LocalHost:{port}", f"http://localhost:{port}"),
            (f"dagd.example.com:{port}", f"http://dagd.example.com:{port}"),
            ("dagd.example.com", "http://dagd.example.com"),
        ]
        for host, origin in own:
            assert await handshake_status(port, upgrade(host, origin)) == 101, host
        refused = [
            # a DNS-rebinding page: its own origin, but a Host that is not dagd's
            (f"evil.example:{port}", f"http://evil.example:{port}"),
            # a foreign page talking to dagd's Host
            (f"127.0.0.1:{port}", f"http://evil.example:{port}"),
            # the same host with another scheme or port is another origin
            (f"127.0.0.1:{port}", f"https://127.0.0.1:{port}"),
            (f"127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"),
            (f"127.0.0.1:{port}", "null"),
        ]
        for host, origin in refused:
            assert await handshake_status(port, upgrade(host, origin)) == 403, (host, origin)
        # no Origin (not a browser): accepted from any Host, as always
        assert await handshake_status(port, upgrade(f"evil.example:{port}")) == 101


async def test_server_origins_still_admit_other_pages(tmp_path: Path) -> None:
    config = make_config(tmp_path, server='origins = ["https://ops.example.com"]')
    async with running(tmp_path, config=config) as daemon:
        port = server_of(daemon).port
        assert port is not None
        status = await handshake_status(port, upgrade("anything", "https://ops.example.com"))
        assert status == 101


async def test_plain_http_needs_a_served_host(tmp_path: Path) -> None:
    config = make_config(tmp_path, server='hosts = ["dagd.example.com"]')
    async with running(tmp_path, config=config) as daemon:
        port = server_of(daemon).port
        assert port is not None
        close = (("Connection", "close"),)
        for host in (f"127.0.0.1:{port}", "localhost", "[::1]:80", "DAGD.example.com."):
            [reply] = await exchange(port, request("/", host=host, headers=close))
            assert reply.status == 200, host
            csp = reply.headers["content-security-policy"]
            assert f"connect-src 'self' ws://{host};" in csp
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:x", "[::1", "a b"):
            [reply] = await exchange(port, request("/", host=host))
            assert reply.status in (400, 421), host
            check_headers(reply)
            assert "ws://" not in reply.headers["content-security-policy"]


async def test_a_wildcard_bind_serves_loopback_names_only(tmp_path: Path) -> None:
    """With host = "0.0.0.0", requests by the machine's other addresses need [server] hosts."""
    config = make_config(tmp_path, server='host = "0.0.0.0"')
    async with running(tmp_path, config=config) as daemon:
        port = server_of(daemon).port
        assert port is not None
        close = (("Connection", "close"),)
        [ok] = await exchange(port, request("/", host="localhost", headers=close))
        assert ok.status == 200
        [no] = await exchange(port, request("/", host="192.0.2.7"))
        assert no.status == 421


async def test_a_stalled_upgrade_is_closed_silently_as_before(tmp_path: Path) -> None:
    async with running(tmp_path, server='handshake_timeout = "300ms"') as daemon:
        port = server_of(daemon).port
        assert port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(upgrade("127.0.0.1")[:-2])  # the blank line never comes
            assert await read_until_closed(stream, 3.0) == b""


async def test_a_handshake_in_pieces_takes_the_front_doors_path(tmp_path: Path) -> None:
    """The head split over two writes is read by h11 first, then handed over: the same
    answers as the one-read path, the Origin rule included."""
    async with running(tmp_path, server='handshake_timeout = "3s"') as daemon:
        port = server_of(daemon).port
        assert port is not None
        for host, origin, status in [
            (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", 101),
            (f"evil.example:{port}", f"http://evil.example:{port}", 403),
            (f"127.0.0.1:{port}", None, 101),
        ]:
            data = upgrade(host, origin)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(data[:30])
                await trio.sleep(0.05)
                await stream.send_all(data[30:])
                with trio.fail_after(2):
                    head = await stream.receive_some()
            assert int(head.split(b" ", 2)[1]) == status, (host, origin, head)


async def test_a_handshake_with_a_repeated_origin_or_host_is_refused(tmp_path: Path) -> None:
    """Which copy the Origin rule reads must not matter: two Origins (or Hosts) get 400,
    whether the head comes in one read (the quick path) or in pieces (h11's path)."""
    async with running(tmp_path, server='handshake_timeout = "3s"') as daemon:
        port = server_of(daemon).port
        assert port is not None
        own = f"http://127.0.0.1:{port}"
        two_origins = upgrade(f"127.0.0.1:{port}", own).replace(
            b"\r\nOrigin:", f"\r\nOrigin: {own}\r\nOrigin:".encode()
        )
        two_hosts = upgrade(f"127.0.0.1:{port}", own).replace(
            b"\r\nHost:", f"\r\nHost: 127.0.0.1:{port}\r\nHost:".encode()
        )
        for data in (two_origins, two_hosts):
            assert await handshake_status(port, data) == 400, data
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(data[:30])
                await trio.sleep(0.05)
                await stream.send_all(data[30:])
                [reply] = parse(await read_until_closed(stream))
            assert reply.status == 400, data
            assert "multiple host" in reply.json()["message"].lower() or (
                "more than one Origin" in reply.json()["message"]
            )


QUICK = upgrade("127.0.0.1:3000", "http://127.0.0.1:3000")


@pytest.mark.parametrize(
    ("data", "host"),
    [
        (QUICK, "127.0.0.1:3000"),
        (QUICK + b"\x81\x05early", "127.0.0.1:3000"),  # frames behind the head are kept
        (upgrade("127.0.0.1", path="/api/v1/ws?x=1"), "127.0.0.1"),
        (QUICK.replace(b"Host: 127.0.0.1:3000\r\n", b""), None),
        (QUICK.replace(b"Upgrade: websocket", b"UPGRADE:  WebSocket "), "127.0.0.1:3000"),
    ],
)
def test_quick_upgrade_takes_the_common_handshake(data: bytes, host: str | None) -> None:
    found = quick_upgrade(data, 16384)
    assert found is not None and found.host == host


@pytest.mark.parametrize(
    "data",
    [
        QUICK[:-2],  # not whole yet
        QUICK.replace(b"Upgrade: websocket\r\n", b""),  # plain GET: 426 from the front door
        QUICK.replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        QUICK.replace(b"GET /api/v1/ws", b"GET /api/v1/wsx"),
        QUICK.replace(b"GET /api/v1/ws", b"POST /api/v1/ws"),
        QUICK.replace(b"GET /api/v1/ws", b"GET /api/v1/%77s"),
        QUICK.replace(b"\r\nHost:", b"\r\nHost: evil.example\r\nHost:"),  # two Hosts
        QUICK.replace(b"\r\nOrigin:", b"\r\nOrigin: http://evil.example\r\nOrigin:"),
        QUICK.replace(b"\r\nOrigin:", b"\r\n Origin:"),  # a folded line
        QUICK.replace(b"\r\nOrigin:", b"\nOrigin:"),  # a bare LF
        QUICK.replace(b"\r\nOrigin:", b"\r\nOrigin"),  # no colon
        upgrade("x", "http://x" + "a" * 20000),  # over the limit
    ],
)
def test_quick_upgrade_leaves_the_rest_to_h11(data: bytes) -> None:
    assert quick_upgrade(data, 16384) is None


async def test_the_server_names_its_dashboard_url(tmp_path: Path) -> None:
    async with running(tmp_path) as daemon:
        server = server_of(daemon)
        assert server.http_url == f"http://127.0.0.1:{server.port}/"
        assert server.url == f"ws://127.0.0.1:{server.port}/api/v1/ws"


@needs_openssl
async def test_https_serves_the_dashboard_with_a_wss_policy(tmp_path: Path) -> None:
    self_signed_cert(tmp_path)
    config = make_config(tmp_path, server='tls_cert = "cert.pem"\ntls_key = "key.pem"')
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    async with running(tmp_path, config=config) as daemon:
        server = server_of(daemon)
        assert server.http_url == f"https://127.0.0.1:{server.port}/"
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        async with stream:
            host = f"127.0.0.1:{server.port}"
            await stream.send_all(request("/", host=host, headers=(("Connection", "close"),)))
            [page] = parse(await read_until_closed(stream))
        assert page.status == 200
        assert f"connect-src 'self' wss://{host};" in page.headers["content-security-policy"]
        # and the page's own https origin may open the WebSocket
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        async with stream:
            await stream.send_all(upgrade(host, f"https://{host}"))
            with trio.fail_after(2):
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 101 ")
