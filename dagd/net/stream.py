"""The byte stream under each WebSocket connection: dagd's own object, so dagd decides how
bytes reach the socket.

trio-websocket is given a `ConnectionStream` (`trio_websocket.wrap_server_stream` takes any
`trio.abc.Stream`), so every byte it writes (the handshake reply, pongs, close frames, the
messages sent before authentication) goes through `send_all` here, and dagd's pre-encoded event
frames go through `write_nowait`. Both append to one outgoing byte sequence, so frames never
interleave: a pong never lands inside an event frame.

`write_nowait` never waits. On an idle plain-TCP connection it is one non-blocking `os.write`
on the socket's descriptor (`trio.SocketStream.socket`, public): most deliveries then cost one
system call and no task switch. Whatever the kernel does not take stays in `pending` until
someone awaits `flush()` (the connection's writer task, or trio-websocket inside `send_all`).

The front door (dagd/net/http/frontdoor.py) reads each connection's first request itself;
for a WebSocket upgrade it puts that request back with `unread`, and trio-websocket reads it
from here as if it came from the socket.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import trio

from dagd.net.frames import close_frame, is_close_frame

#: Close codes a connection gets when the WebSocket library refuses a frame (RFC 6455 7.4.1:
#: 1002 protocol error, 1007 a text message that is not UTF-8). trio-websocket marks such a
#: connection closed without writing a close frame; `aclose` writes it.
FAILED_CONNECTION_CODES = frozenset({1002, 1007})


class ConnectionStream(trio.abc.Stream):
    """A `trio.abc.Stream` over one accepted TCP (or TLS) stream, with a write buffer.

    `close_reason`, if set, returns the WebSocket's close `(code, reason)` or None: when the
    library closes this stream after failing the connection itself (a code in
    FAILED_CONNECTION_CODES and no close frame written), `aclose` writes the close frame first,
    so the client sees why (RFC 6455 7.1.7) instead of a dropped connection (1006).

    `on_end`, if set, is called once the connection has ended for either side: the peer's end
    of stream or a broken transport seen by `receive_some`, or `aclose`. The server sets it
    during the handshake: trio-websocket answers a request it refuses (not a WebSocket
    upgrade, headers over its limit) with a 400 and closes the stream, and stops reading on a
    peer's early end of stream, but in both cases leaves `wrap_server_stream` waiting for a
    request that never comes.
    """

    def __init__(self, transport: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self.transport = transport
        # The socket for direct writes: plain TCP only (TLS must go through the SSL object).
        self._socket = transport.socket if isinstance(transport, trio.SocketStream) else None
        self.pending = bytearray()  # written, not yet on the socket
        self._flushing = trio.Lock()  # held by whoever awaits the transport
        self._closed = False
        self._close_sent = False
        self.close_reason: Callable[[], tuple[int, str] | None] | None = None
        self.on_end: Callable[[], None] | None = None
        self._replay = b""  # put back by `unread`: returned before the socket's bytes

    def _ended(self) -> None:
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end()

    @property
    def peer(self) -> str:
        """The peer's address (an IP address as text, or the socket's name as text)."""
        name = self._peer_name()
        return str(name[0]) if isinstance(name, tuple) else str(name)

    @property
    def peer_address(self) -> str:
        """The peer as "host:port" ("[v6]:port" for IPv6), as HTTP routes see it."""
        name = self._peer_name()
        if not isinstance(name, tuple):
            return str(name)
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"

    def _peer_name(self) -> object:
        transport = self.transport
        tcp = transport if isinstance(transport, trio.SocketStream) else transport.transport_stream
        try:
            return tcp.socket.getpeername()
        except OSError:
            return "unknown"

    def idle(self) -> bool:
        """Can `write_nowait` go straight to the socket: plain TCP, nothing pending, nobody
        writing, not closed?"""
        return (
            self._socket is not None
            and not self.pending
            and not self._flushing.locked()
            and not self._closed
        )

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Append `data` to the outgoing bytes without waiting.

        Returns True when all of it is already on the socket; False when some waits in
        `pending` for a `flush()` (the caller must make sure one follows). Raises
        trio.ClosedResourceError after `aclose`, trio.BrokenResourceError if the socket is
        broken (then nothing of `data` was written or kept).
        """
        if self._closed:
            raise trio.ClosedResourceError("the connection's stream is closed")
        if not self.idle():
            self.pending += data
            return False
        assert self._socket is not None
        fd = self._socket.fileno()  # -1 once closed: never write to a stale descriptor
        sent = 0
        if fd >= 0:
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        if sent < len(data):
            self.pending += memoryview(data)[sent:]
            return False
        return True

    async def flush(self) -> None:
        """Put everything pending on the socket, waiting for the peer as needed.

        Raises trio.BrokenResourceError / trio.ClosedResourceError like
        `trio.SocketStream.send_all`. If cancelled, the stream is in an unknown state (part of
        a frame may be written): close it, never write to it again.
        """
        async with self._flushing:
            while self.pending:
                data = bytes(self.pending)
                self.pending.clear()
                await self.transport.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """trio.abc.Stream: trio-websocket's writes, in order with dagd's own."""
        if is_close_frame(data):
            self._close_sent = True
        self.write_nowait(data)
        await self.flush()

    async def wait_send_all_might_not_block(self) -> None:
        """trio.abc.Stream: delegated to the transport."""
        await self.transport.wait_send_all_might_not_block()

    def unread(self, data: bytes) -> None:
        """Put `data` back in front of what the socket has not delivered yet: the next
        `receive_some` calls return it first."""
        self._replay = data + self._replay

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """trio.abc.Stream: bytes given to `unread` first, then the transport's (b"" or an
        error also calls `on_end`)."""
        if self._replay:
            await trio.lowlevel.checkpoint()
            size = len(self._replay) if max_bytes is None else max_bytes
            chunk, self._replay = self._replay[:size], self._replay[size:]
            return chunk
        try:
            data = await self.transport.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._ended()
            raise
        if not data:
            self._ended()
        return data

    async def aclose(self) -> None:
        """Close the transport (idempotent); first write the close frame of a connection the
        WebSocket library failed without one (see the class docstring), for at most 1 s."""
        if self._closed:
            return
        self._ended()
        reason = self.close_reason() if self.close_reason is not None else None
        if reason is not None and reason[0] in FAILED_CONNECTION_CODES and not self._close_sent:
            self._close_sent = True
            try:
                with trio.move_on_after(1.0), contextlib.suppress(*_BROKEN):
                    self.write_nowait(close_frame(*reason))
                    await self.flush()
            finally:
                self._closed = True
                await self.transport.aclose()
            return
        self._closed = True
        await self.transport.aclose()


_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
