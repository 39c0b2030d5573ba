"""The edge of the WebSocket port, seen from a raw TCP client: every connection that does not
become a WebSocket is closed by the server at once, and leaves no task, descriptor or count
behind.

A real daemon on 127.0.0.1 port 0; the clients are plain `trio.open_tcp_stream` sockets that
write bytes by hand (a refused handshake, half a request, a header block over the limit, bytes
that are not HTTP), so nothing in a client library hides what the server does. Descriptors are
counted in /proc/self/fd (the daemon runs in this process) and tasks by walking trio's task
tree from the root.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from httphelp import read_until_closed  # fails unless closed within 2 s (AT_ONCE)
from wshelp import make_config, needs_openssl, running, self_signed_cert, server_of
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from dagd.daemon.daemon import Daemon
from dagd.net.server import Server

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")

#: How long "at once" may take: far below any timeout the tests configure.
AT_ONCE = 2.0

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(path: str = "/api/v1/ws", *extra: str) -> bytes:
    """A complete WebSocket upgrade request for `path`, with `extra` header lines."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Every task of this trio run (the daemon's included)."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


async def send_ignoring_reset(stream: trio.abc.Stream, data: bytes) -> None:
    """Send `data`; the server may close (and reset) before it has all of it."""
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(data)


class Baseline:
    """The server's counts, its process's descriptors and the trio tasks before a probe."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before = self.now()

    def now(self) -> tuple[int, int, int, int]:
        """(connections, handshaking, open descriptors, trio tasks)"""
        return (self.server.connections, self.server.handshaking, open_fds(), task_count())

    async def restored(self) -> None:
        """Wait (bounded) until the counts are back where they were."""
        with trio.move_on_after(AT_ONCE):
            while self.now() != self.before:
                await trio.sleep(0.01)
        assert self.now() == self.before, "(connections, handshaking, fds, tasks)"


@contextlib.asynccontextmanager
async def edge(tmp_path: Path, server: str = "") -> AsyncIterator[tuple[Daemon, Server, int]]:
    """A daemon with long handshake and auth timeouts (so closing "at once" is never a timeout
    firing), settled: one full connection made and closed first."""
    settings = "handshake_timeout = 30\nauth_timeout = 30\n" + server
    async with running(tmp_path, server=settings) as daemon:
        srv = server_of(daemon)
        assert srv.port is not None
        # One whole handshake first: anything created lazily on first use exists now.
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with stream:
            await stream.send_all(upgrade("/nowhere"))
            await read_until_closed(stream)
        await trio.sleep(0.05)
        yield daemon, srv, srv.port


# ------------------------------------------------------------------ refused handshakes


REFUSALS = {
    "wrong path": (upgrade("/api/v1/wsx"), "", b"HTTP/1.1 404 "),
    "root path": (upgrade("/"), "", b"HTTP/1.1 404 "),
    "bad origin": (upgrade("/api/v1/ws", "Origin: http://evil.example"), "", b"HTTP/1.1 403 "),
    "full": (upgrade(), "max_connections = 1", b"HTTP/1.1 503 "),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_handshake_is_closed_at_once(tmp_path: Path, case: str) -> None:
    request, settings, status = REFUSALS[case]
    async with edge(tmp_path, settings) as (_daemon, server, port):
        holder = None
        if case == "full":  # the one allowed connection, held open (it never authenticates)
            holder = await trio.open_tcp_stream("127.0.0.1", port)
            await holder.send_all(upgrade())
            with trio.fail_after(AT_ONCE):
                assert (await holder.receive_some()).startswith(b"HTTP/1.1 101 ")
                while server.connections != 1:
                    await trio.sleep(0.01)
        base = Baseline(server)
        for _ in range(3):  # the same again: nothing accumulates
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                assert (await read_until_closed(stream)).startswith(status)
        await base.restored()
        if holder is not None:
            await holder.aclose()


async def test_a_handshake_refused_while_shutting_down_is_closed_at_once(tmp_path: Path) -> None:
    async with edge(tmp_path) as (_daemon, server, port):
        await server.close_all()  # what shutdown calls once the runs have stopped
        base = Baseline(server)
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(upgrade())
                assert (await read_until_closed(stream)).startswith(b"HTTP/1.1 503 ")
        await base.restored()


# ------------------------------------------------------ handshakes that never complete


NOT_WEBSOCKET = {
    # Plain HTTP is the front door's (tests/net/http): on the endpoint's path it is refused.
    "plain HTTP on the endpoint": b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "plain HTTP elsewhere, closing": (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ),
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    "a POST": b"POST /api/v1/ws HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "an old HTTP": b"GET /api/v1/ws HTTP/1.0\r\n\r\n",
    "headers over the limit in one write": upgrade("/api/v1/ws", "X-Big: " + "a" * 40_000),
}


@pytest.mark.parametrize("case", sorted(NOT_WEBSOCKET))
async def test_bytes_that_are_no_websocket_handshake_are_closed_at_once(
    tmp_path: Path, case: str
) -> None:
    async with edge(tmp_path) as (_daemon, server, port):
        base = Baseline(server)
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await send_ignoring_reset(stream, NOT_WEBSOCKET[case])
                received = await read_until_closed(stream)
                assert b" 101 " not in received
        await base.restored()


async def test_a_header_block_that_grows_without_end_is_cut_off(tmp_path: Path) -> None:
    """Header lines trickling in, each small, never ending: the server stops reading at its
    header limit (16 KiB) and closes, long before the handshake timeout."""
    async with edge(tmp_path) as (_daemon, server, port):
        base = Baseline(server)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            start = trio.current_time()
            sent = 0
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n")
                for i in range(1000):  # 1 MB if the server kept reading
                    await stream.send_all(b"X-%d: %s\r\n" % (i, b"a" * 1000))
                    sent += 1
                    await trio.sleep(0.001)
            assert b" 101 " not in await read_until_closed(stream)
            assert sent < 1000  # cut off (near 16 KiB; the kernels buffer some more)
            assert trio.current_time() - start < 10
        await base.restored()


async def test_a_stalled_handshake_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    async with edge(tmp_path, "handshake_timeout = 0.5") as (_daemon, server, port):
        base = Baseline(server)
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        half = await trio.open_tcp_stream("127.0.0.1", port)
        async with silent, half:
            await half.send_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n")  # never ends
            with trio.fail_after(AT_ONCE):
                while server.handshaking != 2:
                    await trio.sleep(0.01)
            assert await read_until_closed(silent, 0.5 + AT_ONCE) == b""
            assert await read_until_closed(half, AT_ONCE) == b""
        await base.restored()


async def test_stalled_handshakes_are_bounded_by_max_connections(tmp_path: Path) -> None:
    """Half-open handshakes cannot pile up descriptors and tasks until the handshake timeout:
    while max_connections of them are pending, a further TCP connection gets a 503 and is
    closed without being read; once they end, handshakes work again."""
    async with edge(tmp_path, "max_connections = 2") as (_daemon, server, port):
        base = Baseline(server)
        stalled = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for stream in stalled:
            await stream.send_all(b"GET /api/v1/ws HTTP/1.1\r\n")
        with trio.fail_after(AT_ONCE):
            while server.handshaking != 2:
                await trio.sleep(0.01)
        for _ in range(5):
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            async with extra:
                received = await read_until_closed(extra)
                # The 503 is best effort: the close may reset the unread connection first.
                assert received == b"" or received.startswith(b"HTTP/1.1 503 "), received
        assert server.busy_refused == 5
        assert server.handshaking == 2
        for stream in stalled:
            await stream.aclose()
        await base.restored()
        # and a whole handshake is served again
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(upgrade())
            with trio.fail_after(AT_ONCE):
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 101 ")


# ------------------------------------------------- refused after the WebSocket handshake


async def raw_websocket(port: int) -> tuple[trio.SocketStream, WSConnection]:
    """A WebSocket on a raw stream (wsproto), past the HTTP handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/api/v1/ws")))
    with trio.fail_after(AT_ONCE):
        while not any(isinstance(e, AcceptConnection) for e in ws.events()):
            ws.receive_data(await stream.receive_some())
    return stream, ws


@pytest.mark.parametrize("first", ["wrong token", "not auth", "nothing"])
async def test_a_refused_websocket_is_dropped_even_if_the_peer_never_closes(
    tmp_path: Path, first: str
) -> None:
    """Refused at authentication (a wrong token, another message first, nothing within
    auth_timeout): the server sends its error and close frame, and closes the TCP connection
    itself within a second although this peer never answers the close frame."""
    async with edge(tmp_path, 'auth_timeout = "300ms"') as (_daemon, server, port):
        base = Baseline(server)
        stream, ws = await raw_websocket(port)
        async with stream:
            if first != "nothing":
                message = {"type": "ping"}
                if first == "wrong token":
                    message = {"type": "auth", "token": "wrong"}
                await stream.send_all(ws.send(TextMessage(data=json.dumps(message))))
            received = await read_until_closed(stream, 0.3 + 1.0 + AT_ONCE)
        ws.receive_data(received)
        events = list(ws.events())
        closes = [e for e in events if isinstance(e, CloseConnection)]
        assert [c.code for c in closes] == [1008]
        texts = [json.loads(e.data)["code"] for e in events if isinstance(e, TextMessage)]
        expected = {"wrong token": "auth_failed", "not auth": "auth_required"}
        assert texts == [expected.get(first, "auth_timeout")]
        await base.restored()


# -------------------------------------------------------------------------------- TLS


@needs_openssl
async def test_tls_port_closes_plain_and_refused_clients_at_once(tmp_path: Path) -> None:
    self_signed_cert(tmp_path)
    tls = 'tls_cert = "cert.pem"\ntls_key = "key.pem"\nhandshake_timeout = 30'
    config = make_config(tmp_path, server=tls)
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    async with running(tmp_path, config=config) as daemon:
        server = server_of(daemon)
        assert server.port is not None
        port = server.port

        async def tls_request(path: str) -> bytes:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
            async with stream:
                await stream.send_all(upgrade(path))
                return await read_until_closed(stream)

        assert (await tls_request("/nowhere")).startswith(b"HTTP/1.1 404 ")  # settle
        base = Baseline(server)
        for _ in range(3):
            assert (await tls_request("/nowhere")).startswith(b"HTTP/1.1 404 ")
            plain = await trio.open_tcp_stream("127.0.0.1", port)
            async with plain:  # a TLS-less client on the TLS port
                await send_ignoring_reset(plain, upgrade())
                assert b" 101 " not in await read_until_closed(plain)
        await base.restored()
