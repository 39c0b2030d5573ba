"""Fail a WebSocket connection the way RFC 6455 asks: with a close frame that says why.

When wsproto meets a frame it must refuse (a text message that is not UTF-8: 1007; a framing
error such as an unmasked client frame: 1002), it hands trio-websocket a `CloseConnection`
event for a close that no peer sent. trio-websocket 0.12 handles it like a peer's close and
replies only when the peer started the closing handshake, so it drops the TCP connection
without a close frame and the client sees 1006 with no reason. The wrapper below sends the
close frame first for such a close, decided locally (the connection is still OPEN: a peer's
close frame would have moved it to REMOTE_CLOSING), then lets trio-websocket finish as before.

It patches a private method of trio-websocket, which is pinned below 0.13 for this and for
the server's direct writes (dagd/server.py); `install()` is idempotent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

_Handler = Callable[[Any, CloseConnection], Awaitable[None]]


def _wrap(original: _Handler) -> _Handler:
    async def handle_close(self: Any, event: CloseConnection) -> None:
        if self._wsproto.state is ConnectionState.OPEN:  # wsproto refused a frame
            with contextlib.suppress(ConnectionClosed):
                await self._send(CloseConnection(code=event.code, reason=event.reason))
        await original(self, event)

    handle_close.dagd_fails_with_close_frame = True  # type: ignore[attr-defined]
    return handle_close


def install() -> None:
    original = WebSocketConnection._handle_close_connection_event
    if not getattr(original, "dagd_fails_with_close_frame", False):
        WebSocketConnection._handle_close_connection_event = _wrap(original)  # type: ignore[method-assign]
