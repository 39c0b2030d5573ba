"""The port: the WebSocket endpoint `/api/v1/ws` and plain HTTP, served from the daemon's own
trio loop.

`serve` listens (TCP, or TLS through `trio.SSLListener`) and runs one task per accepted
connection: it puts a `ConnectionStream` (dagd's own, dagd/net/stream.py) under the connection
and reads the first request through the front door (dagd/net/http/frontdoor.py, h11). A
WebSocket upgrade for `/api/v1/ws` goes back into the stream and on to trio-websocket with the
public `wrap_server_stream`, which answers the handshake (403 for a refused Origin, 503 while
closing or full) and passes an accepted WebSocket to a `Connection` (dagd/net/connection.py);
any other upgrade is 404. Every other request is plain HTTP, answered by the front door from
the route table for as long as the client keeps the connection.

Every connection that does not become a WebSocket or a kept HTTP connection (refused,
malformed, over-long or stalled request) is closed by the server at once, so a refused client
never holds a task or a descriptor; at most `max_connections` first requests and handshakes
are in progress at a time (more are answered 503 and closed without being read), and at most
`max_connections` WebSockets and HTTP connections together are open. The server keeps the
connection registry, sends heartbeats, and closes every connection with 1001 on shutdown
(`close_all`, called by the composition root after the runs stopped and the store is flushed).
An Origin may open the WebSocket if `server.origins` lists it or it is the page's own
(dagd/net/http/hosts.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from dagd.core.config import Config
from dagd.core.protocol.answers import Heartbeat
from dagd.core.protocol.codec import encode
from dagd.core.protocol.codes import CloseCode
from dagd.daemon.api import DaemonService
from dagd.net.auth import AuthThrottle, TokenBook
from dagd.net.connection import CloseJob, Connection, Text
from dagd.net.frames import FrameCache
from dagd.net.http.context import HttpContext, dagd_version
from dagd.net.http.frontdoor import (
    RECEIVE_SIZE,
    WEBSOCKET_PATH,
    FrontDoor,
    HttpSession,
    Received,
    quick_upgrade,
)
from dagd.net.http.hosts import is_own_origin
from dagd.net.http.router import Router
from dagd.net.http.routes import all_routes
from dagd.net.stream import ConnectionStream

log = logging.getLogger("dagd.net.server")

PATH = WEBSOCKET_PATH
MESSAGE_QUEUE_SIZE = 4  # inbound messages trio-websocket holds before its reader waits
DISCONNECT_TIMEOUT = 2.0  # seconds for the closing handshake at the end of a connection
#: Written, best effort and without reading the request, to a connection that finds
#: max_connections handshakes already in progress; then the connection is closed.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 20\r\nconnection: close\r\n\r\n"
    b"too many handshakes\n"
)

#: Errors that end one connection and nothing else.
_CONNECTION_ERRORS = (
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    trio.TooSlowError,
)

Transport = trio.SocketStream | trio.SSLStream[trio.SocketStream]


class Server:
    """The connection registry and the handshake policy, for one daemon and its config."""

    def __init__(self, daemon: DaemonService, config: Config) -> None:
        self.daemon = daemon
        self.config = config.server
        self.tokens = TokenBook.from_config(config)
        self.throttle = AuthThrottle()
        self.frames = FrameCache()  # each event's frame, built once for every client
        self.connections = 0  # accepted WebSockets (authenticated or not)
        self.handshaking = 0  # TCP connections whose HTTP handshake is not finished
        self.busy_refused = 0  # connections closed unread: max_connections handshakes pending
        self.authenticated: set[Connection] = set()
        self.unauthenticated: set[Connection] = set()  # accepted, auth not yet done
        self.slow_closed = 0
        self.http_connections = 0  # plain HTTP connections open now
        self.events_delivered = 0  # live events written to clients (one per client)
        self.events_replayed = 0  # events written to clients by replays
        self.port: int | None = None
        self.url: str | None = None  # ws:// or wss:// URL of the endpoint, once listening
        self.http_url: str | None = None  # http:// or https:// URL of the dashboard (`/`)
        self._closing = False
        self._drained = trio.Event()
        #: What the HTTP route modules are given (dagd/net/http/context.py).
        self.http = HttpContext(
            daemon=daemon,
            config=config,
            tokens=self.tokens,
            throttle=self.throttle,
            net=self,
            started=time.monotonic(),
            version=dagd_version(),
        )
        self.door = FrontDoor(
            Router(all_routes(self.http)),
            self.config,
            tls=self.config.tls_cert is not None,
            closing=lambda: self._closing,
        )

    @property
    def authenticated_clients(self) -> int:
        """WebSockets open now that have authenticated."""
        return len(self.authenticated)

    async def serve_connection(self, transport: Transport) -> None:
        """Serve one accepted TCP (or TLS) connection until it ends, then close it.

        `trio.serve_listeners` calls this per connection; nothing may escape it (an exception
        here would stop the whole server): a connection's errors are logged, never raised.
        """
        if self.handshaking >= self.config.max_connections:
            await self._refuse_busy(transport)
            return
        stream = ConnectionStream(transport)
        peer = stream.peer
        try:
            async with trio.open_nursery() as nursery:
                request = None
                received = None
                session = None
                host = None  # the upgrade request's Host, for the Origin rule
                self.handshaking += 1
                try:
                    deadline = trio.current_time() + self.config.handshake_timeout
                    first: bytes | bytearray = b""
                    with trio.move_on_at(deadline):
                        first = await stream.receive_some(RECEIVE_SIZE)
                    upgrade = quick_upgrade(first, self.config.max_header_bytes)
                    if upgrade is not None:
                        # The usual WebSocket handshake: straight to trio-websocket.
                        host = upgrade.host
                        stream.unread(bytes(first))
                        request = await self._websocket_handshake(nursery, stream, deadline)
                    elif first:
                        session = self.door.session(stream, peer)
                        session.conn.receive_data(bytes(first))
                        received = await session.next_request(deadline, deadline)
                        if received is not None and session.upgrading:
                            host = received.headers.get("host")
                            request = await self._upgrade(nursery, session, received, deadline)
                            received = None
                finally:
                    stream.on_end = None
                    self.handshaking -= 1
                if request is not None:
                    session = None  # its h11 state: nothing a WebSocket should carry along
                    await self.handle(request, stream, peer, host)
                elif received is not None and session is not None:
                    await self._serve_http(session, received)
                nursery.cancel_scope.cancel()  # trio-websocket's reader task
        except _CONNECTION_ERRORS:
            pass
        except BaseExceptionGroup as group:
            rest = group.split(_CONNECTION_ERRORS)[1]
            if rest is not None:
                if rest.split(trio.Cancelled)[1] is None:
                    raise
                log.exception("connection %s failed", peer, exc_info=rest)
        except Exception:
            log.exception("connection %s failed", peer)
        finally:
            # Also after request.reject(): trio-websocket leaves the stream open then.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _upgrade(
        self, nursery: trio.Nursery, session: HttpSession, received: Received, deadline: float
    ) -> WebSocketRequest | None:
        """An upgrade request the front door has read: its bytes go back into the stream for
        trio-websocket (`_websocket_handshake`); one for another path is answered 404."""
        if received.head.target.split(b"?", 1)[0] != PATH.encode():
            await session.refuse(404, "not_found", f"not found: the endpoint is {PATH}", text=True)
            return None
        session.stream.unread(session.replay(received))
        return await self._websocket_handshake(nursery, session.stream, deadline)

    async def _websocket_handshake(
        self, nursery: trio.Nursery, stream: ConnectionStream, deadline: float
    ) -> WebSocketRequest | None:
        """trio-websocket reads the handshake from `stream` (the request put back into it).
        None if it never completes by `deadline` (trio time)."""
        with trio.move_on_at(deadline) as scope:
            # A refused or abandoned handshake ends the stream but not the wait for a
            # request (see ConnectionStream.on_end): stop waiting then.
            stream.on_end = scope.cancel
            return await wrap_server_stream(
                nursery,
                stream,
                message_queue_size=MESSAGE_QUEUE_SIZE,
                max_message_size=self.config.max_message_size,
            )
        return None

    async def _serve_http(self, session: HttpSession, received: Received) -> None:
        """A plain HTTP connection: counted in max_connections with the WebSockets."""
        if self.connections + self.http_connections >= self.config.max_connections:
            await session.refuse(503, "busy", "too many connections")
            return
        self.http_connections += 1
        try:
            await self.door.serve(session, received)
        finally:
            self.http_connections -= 1

    @property
    def http_requests(self) -> int:
        """Plain HTTP requests answered since start, any status (refusals included)."""
        return self.door.requests

    async def _refuse_busy(self, transport: Transport) -> None:
        """Too many handshakes in progress: a 503 if the kernel takes it at once (plain TCP
        only: TLS would need a handshake first), then close. Never waits for the peer."""
        self.busy_refused += 1
        if isinstance(transport, trio.SocketStream):
            with contextlib.suppress(OSError):  # trio's sockets never block
                os.write(transport.socket.fileno(), BUSY_RESPONSE)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(transport)

    async def handle(
        self,
        request: WebSocketRequest,
        stream: ConnectionStream,
        peer: str,
        host: str | None = None,
    ) -> None:
        """Answer the handshake, then serve an accepted WebSocket until it closes. `host` is
        the request's Host header (trio-websocket does not show it; the front door read it)."""
        if request.path.split("?", 1)[0] != PATH:
            await request.reject(404, body=b"not found: the endpoint is " + PATH.encode())
            return
        origin = _header(request, b"origin")
        if origin is not None and not self._origin_allowed(origin, host):
            log.info("refused %s: origin %r is not allowed", peer, origin)
            await request.reject(403, body=b"origin not allowed")
            return
        if self._closing:
            await request.reject(503, body=b"shutting down")
            return
        if self.connections + self.http_connections >= self.config.max_connections:
            await request.reject(503, body=b"too many connections")
            return
        self.connections += 1
        try:
            ws = await request.accept()
            stream.close_reason = lambda: _close_reason(ws)
            try:
                await Connection(self, ws, stream, peer).run()
            finally:
                with trio.move_on_after(DISCONNECT_TIMEOUT):
                    await ws.aclose()
        finally:
            self.connections -= 1
            if self._closing and not self.authenticated:
                self._drained.set()

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """A browser's Origin may open the WebSocket if server.origins lists it, or if it is
        the page's own (`scheme://Host` with a served Host, dagd/net/http/hosts.py)."""
        if origin in self.config.origins:
            return True
        return is_own_origin(origin, host, self.door.scheme, self.door.served)

    async def heartbeats(self) -> None:
        """Every heartbeat_interval seconds, queue a heartbeat for every authenticated client."""
        while True:
            await trio.sleep(self.config.heartbeat_interval)
            beat = Text(encode(Heartbeat(time.time())))
            for conn in list(self.authenticated):
                conn.queue(beat)

    async def close_all(self) -> None:
        """Deliver what is queued, then close every connection with 1001 (going away); those
        still before authentication are closed with 1001 at once. New handshakes get 503.
        Waits at most 3 s for the authenticated ones."""
        self._closing = True
        async with trio.open_nursery() as nursery:
            for conn in list(self.unauthenticated):
                nursery.start_soon(conn.close_going_away)
            if self.authenticated:
                for conn in list(self.authenticated):
                    conn.queue(CloseJob(CloseCode.GOING_AWAY, "daemon shutting down"))
                with trio.move_on_after(3.0):
                    await self._drained.wait()


def _close_reason(ws: WebSocketConnection) -> tuple[int, str] | None:
    closed = ws.closed
    return None if closed is None else (closed.code, closed.reason or "")


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _port(listener: trio.SocketListener) -> int:
    port = listener.socket.getsockname()[1]
    assert isinstance(port, int)
    return port


async def serve(
    daemon: DaemonService,
    config: Config,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the protocol on config.server's host and port until cancelled.

    `task_status.started(server)` once listening (`server.url`, `server.http_url`,
    `server.port` set). Raises
    OSError if the address cannot be bound, ValueError for a bad token in config.tokens
    (TokenBook.from_config), ssl.SSLError / OSError for an unreadable TLS certificate or key.
    """
    server = Server(daemon, config)
    cfg = server.config
    ssl_context = None
    if cfg.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    tcp = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
    listeners: list[Any] = tcp
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in tcp]
    server.port = _port(tcp[0])
    scheme = "wss" if ssl_context else "ws"
    host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
    server.url = f"{scheme}://{host}:{server.port}{PATH}"
    server.http_url = f"{'https' if ssl_context else 'http'}://{host}:{server.port}/"
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.serve_connection, listeners)
        nursery.start_soon(server.heartbeats)
        if server.tokens.generated_file:
            log.info(
                "no tokens configured: clients use the token in %s", server.tokens.generated_file
            )
        log.info("listening on %s (the dashboard at %s)", server.url, server.http_url)
        task_status.started(server)
