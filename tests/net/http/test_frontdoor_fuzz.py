"""Random bytes and mangled requests never take the front door down: each connection gets an
answer or is closed, and afterwards nothing is left open and the daemon still serves."""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from httphelp import exchange, request, served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOKENS = st.sampled_from(
    [b"GET", b"POST", b"HEAD", b" ", b"/", b"/api/v1/ws", b"/assets/", b"HTTP/1.1", b"HTTP/1.0",
     b"\r\n", b"\n", b"Host: 127.0.0.1", b"Host:", b"Content-Length: ",
     b"Transfer-Encoding: chunked",
     b"Upgrade: websocket", b"Connection: close", b"Connection: Upgrade", b"Expect: 100-continue",
     b"0", b"5", b"-1", b"99999999999999999999", b"%", b"%2e", b"..", b"?", b"&", b"=", b":",
     b"\x00", b"\xff", b"\r\n\r\n"]
)  # fmt: skip
PAYLOADS = st.one_of(
    st.binary(max_size=3000),
    st.lists(TOKENS, max_size=60).map(b"".join),
    st.tuples(st.lists(TOKENS, max_size=30).map(b"".join), st.binary(max_size=200)).map(
        lambda parts: b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + parts[0] + parts[1]
    ),
)


def poke(port: int, payload: bytes) -> bytes:
    """Send `payload`, end our side, read until the server closes (blocking, in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            return b""
    return received


async def test_random_bytes_never_take_the_server_down(tmp_path: Path) -> None:
    async with served(tmp_path, "max_header_bytes = 2048\nmax_body_bytes = 1000") as (
        server,
        port,
    ):

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(PAYLOADS)
        def check(payload: bytes) -> None:
            received = poke(port, payload)
            if received:
                assert received.startswith(b"HTTP/1."), received[:80]
                assert b"Traceback" not in received

        await trio.to_thread.run_sync(check)
        [reply] = await exchange(port, request("/echo", headers=(("Connection", "close"),)))
        assert reply.status == 200
        with trio.fail_after(2):
            while server.http_connections or server.handshaking or server.connections:
                await trio.sleep(0.01)
