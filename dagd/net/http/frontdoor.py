"""The front door: plain HTTP/1.1 on the WebSocket's port, read with h11.

The server (dagd/net/server.py) reads each connection's first bytes. The usual WebSocket
handshake (`quick_upgrade`: a whole `GET /api/v1/ws` upgrade head in that first read) goes
straight back into the connection's stream and on to trio-websocket, which parses it (wsproto,
on h11) as if nothing had come before: a WebSocket connection costs what it did before the
front door. Everything else gets an `HttpSession` and is read with h11; an upgrade for
`/api/v1/ws` found that way is put back into the stream the same way (rebuilt from h11's
parse). A WebSocket upgrade must be a connection's first request. Every other request is
answered by `FrontDoor.serve` from the route table (dagd/net/http/router.py), on the same
connection for as long as the client keeps it alive.

The rules (docs/http.md is the user's view):

- HTTP/1.1 persistent connections: requests are answered one at a time, in order (pipelined
  requests wait in h11's buffer); `Connection: close` and HTTP/1.0 end the connection after
  the response. An idle connection is closed after `keepalive_timeout` seconds.
- A request must arrive whole (head and body) within `handshake_timeout` seconds of its first
  byte (of the connection's opening, for the first request). A stalled body is answered 408,
  a stalled or missing head just closed (the WebSocket server always did so: nothing says such
  a client speaks HTTP at all).
- The head is at most `max_header_bytes` (431), the body at most `max_body_bytes` (413, read no
  further); bytes that are not HTTP get 400, a request line of another version than HTTP/1.x
  (HTTP/2's preface too) 505. Content-Length with Transfer-Encoding, or a repeated Host or
  Origin, is 400 (`_refused_head`).
- Plain requests need a Host that names dagd (dagd/net/http/hosts.py), else 421: a
  DNS-rebinding page cannot read the JSON API.
- `GET /api/v1/ws` without an upgrade is 426 (`Upgrade: websocket`); an upgrade request for any
  other path is 404, as the WebSocket server has always answered it.
- Unknown path 404, wrong method 405 with `Allow`; `HEAD` is the `GET` route without a body.
- A handler's exception is logged and answered 500: no handler error can end the daemon.
- Every refusal above (and 503 while shutting down or full) closes the connection after the
  answer. Responses a handler makes (its own 4xx included) keep the connection.
- Every response carries `Date`, `Content-Length` (not a 304), and the security headers
  (`security_headers`); never a cookie.
"""

from __future__ import annotations

import email.utils
import http
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs, unquote

import attrs
import h11
import trio

from dagd.core.config import ServerConfig
from dagd.net.http.hosts import is_served, served_names
from dagd.net.http.message import HttpRequest, HttpResponse, error_response
from dagd.net.http.router import Found, MethodNotAllowed, Router
from dagd.net.stream import ConnectionStream

log = logging.getLogger("dagd.net.http")

#: Headers a request may carry once (a second copy: 400, see _refused_head).
SINGLE_HEADERS = frozenset({"host", "origin"})
#: The WebSocket endpoint's path.
WEBSOCKET_PATH = "/api/v1/ws"
RECEIVE_SIZE = 65536  # bytes asked of the socket per read
#: How long a refusal's answer may take to write before the connection is just closed (s).
REFUSAL_SEND_TIMEOUT = 1.0
#: At most this many query parameters (more: 400).
MAX_QUERY_FIELDS = 1000

#: The Content-Security-Policy, with the page's own WebSocket URL put in for `{ws}`:
#: browsers differ on whether 'self' covers ws: (CSP Level 3 says yes, older ones no).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{ws}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: Sent with every response besides the CSP.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


def security_headers(host: str | None, tls: bool) -> list[tuple[bytes, bytes]]:
    """The security headers for a response to a request whose Host is `host` (a served name,
    or None: then the CSP's connect-src is 'self' only)."""
    ws = f" {'wss' if tls else 'ws'}://{host}" if host else ""
    return [(b"content-security-policy", CSP.format(ws=ws).encode()), *SECURITY_HEADERS]


class _SecurityHeaders:
    """`security_headers` per Host, remembered for the few Hosts a daemon sees (at most
    `LIMIT`: the port part of a Host is the client's to choose, so the memo is bounded)."""

    LIMIT = 64

    def __init__(self, tls: bool) -> None:
        self.tls = tls
        self._known: dict[str | None, list[tuple[bytes, bytes]]] = {}

    def __call__(self, host: str | None) -> list[tuple[bytes, bytes]]:
        found = self._known.get(host)
        if found is None:
            found = security_headers(host, self.tls)
            if len(self._known) < self.LIMIT:
                self._known[host] = found
        return found


@attrs.frozen
class QuickUpgrade:
    """The first read of a connection is a whole WebSocket upgrade head for the endpoint;
    `host` is its Host header (None without one)."""

    host: str | None


_QUICK_PREFIXES = (
    b"GET " + WEBSOCKET_PATH.encode() + b" ",
    b"GET " + WEBSOCKET_PATH.encode() + b"?",
)


def quick_upgrade(data: bytes | bytearray, max_header_bytes: int) -> QuickUpgrade | None:
    """Is `data`, a connection's first read, the common WebSocket handshake: a complete head
    (at most max_header_bytes) of `GET /api/v1/ws` with `Upgrade: websocket`, plain lines
    (CRLF only, none folded) and at most one Host and one Origin line?

    Then the server hands the bytes to trio-websocket untouched, whose parser (wsproto, on
    h11) reads the request once instead of twice: a WebSocket connection costs what it did
    before the front door. The Host is read here only for the Origin rule, from exactly the
    lines h11 would see. Anything else (None) takes the front door's h11 path (where a
    repeated Host or Origin is refused, 400).
    """
    if not data.startswith(_QUICK_PREFIXES):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > max_header_bytes:
        return None
    host: bytes | None = None
    origin = False
    upgrade = False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        if not line or line[0] in b" \t" or b"\n" in line or b"\r" in line:
            return None
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name or b"\t" in name:
            return None
        name = name.lower()
        if name == b"host":
            if host is not None:
                return None
            host = value.strip(b" \t")
        elif name == b"origin":
            if origin:
                return None
            origin = True
        elif name == b"upgrade":
            upgrade = value.strip(b" \t").lower() == b"websocket"
    if not upgrade:
        return None
    return QuickUpgrade(None if host is None else host.decode("latin-1"))


@attrs.frozen
class Received:
    """A whole request: h11's head, its headers as HttpRequest has them (lower-case names,
    repeated ones joined with ", "), and the body (at most max_body_bytes)."""

    head: h11.Request
    headers: dict[str, str]
    body: bytes


class _Clock:
    """The `Date` header's value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


class FrontDoor:
    """The HTTP rules of one server: its route table, limits and served names.

    `closing` says whether the server is shutting down (then every response closes its
    connection and new requests get 503). `requests` counts the plain HTTP responses written
    (handler answers and every refusal: 400, 408, 413, 431 while reading, 503 busy, 404 for an
    upgrade to another path), one per request answered.
    """

    def __init__(
        self,
        router: Router,
        config: ServerConfig,
        *,
        tls: bool = False,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.router = router
        self.config = config
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.served = served_names(config)
        self.closing = closing
        self.requests = 0
        self.clock = _Clock()
        self.security_headers = _SecurityHeaders(tls)
        self._host_verdicts: dict[str | None, bool] = {}

    def _is_served(self, host: str | None) -> bool:
        """`is_served`, remembered for the few Hosts a daemon sees (at most 64)."""
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            verdict = is_served(host, self.served)
            if len(self._host_verdicts) < 64:
                self._host_verdicts[host] = verdict
        return verdict

    def session(self, stream: ConnectionStream, peer: str) -> HttpSession:
        """The HTTP side of one new connection."""
        return HttpSession(self, stream, peer)

    async def serve(self, session: HttpSession, first: Received) -> None:
        """Answer `first`, then every further request of the connection, until it closes
        (either side, a refusal, or idle for keepalive_timeout seconds)."""
        received: Received | None = first
        while received is not None:
            if not await self.answer(session, received):
                return
            if session.conn.our_state is not h11.DONE or session.conn.their_state is not h11.DONE:
                return  # h11 says the connection ends here (Connection: close, HTTP/1.0)
            session.conn.start_next_cycle()
            idle_until = trio.current_time() + self.config.keepalive_timeout
            received = await session.next_request(None, idle_until)

    async def answer(self, session: HttpSession, received: Received) -> bool:
        """Answer one plain request; False if the connection must close now."""
        head = received.head
        method = head.method.decode("ascii", "replace")
        target = head.target.decode("latin-1")
        headers = received.headers
        host = headers.get("host")
        if not self._is_served(host):
            what = "no Host header" if host is None else f"Host {host!r} is not a name dagd serves"
            return await session.refuse(421, "misdirected", f"{what} (see [server] hosts)")
        if self.closing():
            return await session.refuse(503, "shutting_down", "dagd is shutting down")
        raw_path, _, raw_query = target.partition("?")
        if not raw_path.startswith("/"):
            return await session.refuse(400, "bad_request", "the target must be a path")
        try:
            query = (
                parse_qs(raw_query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
                if raw_query
                else {}
            )
        except ValueError:
            return await session.refuse(400, "bad_request", "too many query parameters")
        path = unquote(raw_path) if "%" in raw_path else raw_path
        if path == WEBSOCKET_PATH:
            if method in ("GET", "HEAD"):
                return await session.refuse(
                    426,
                    "upgrade_required",
                    f"{WEBSOCKET_PATH} is dagd's WebSocket endpoint: connect with a WebSocket",
                    (("upgrade", "websocket"),),
                )
            return await session.refuse(
                405, "method_not_allowed", f"{method} {WEBSOCKET_PATH}", (("allow", "GET"),)
            )
        segments = tuple(raw_path[1:].split("/"))
        if "%" in raw_path:
            segments = tuple(unquote(segment) for segment in segments)
        found = self.router.match(method, segments)
        if found is None:
            return await session.refuse(404, "not_found", f"no such path: {path}")
        if isinstance(found, MethodNotAllowed):
            return await session.refuse(
                405, "method_not_allowed", f"{method} {path}", (("allow", found.allow),)
            )
        assert isinstance(found, Found)
        request = HttpRequest(method, path, query, headers, received.body, session.address)
        try:
            response = await found.handler(request, found.params)
        except Exception:
            log.exception("%s %s from %s failed", method, path, session.peer)
            return await session.refuse(500, "internal", "the request failed; see dagd's log")
        return await session.respond(response, host, head_only=method == "HEAD", close=False)


class HttpSession:
    """One connection's HTTP side: its h11 state and how requests are read and answered."""

    def __init__(self, door: FrontDoor, stream: ConnectionStream, peer: str) -> None:
        self.door = door
        self.stream = stream
        self.peer = peer  # the IP address, for the log
        self._address: str | None = None
        self.method = b""  # of the request being read or answered (a HEAD gets no body)
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=door.config.max_header_bytes
        )

    @property
    def address(self) -> str:
        """The peer as "host:port", for HttpRequest.peer (asked of the socket once)."""
        if self._address is None:
            self._address = self.stream.peer_address
        return self._address

    @property
    def upgrading(self) -> bool:
        """Did the request just read ask to switch protocols (an `Upgrade` header)?"""
        # A documented h11 state that h11's __all__ leaves out.
        return self.conn.their_state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

    def replay(self, received: Received) -> bytes:
        """The bytes of an upgrade request as the WebSocket server must read them: its head
        (h11's parse, original header case), then whatever followed it on the socket."""
        head = received.head
        lines = [b"%s %s HTTP/%s" % (head.method, head.target, head.http_version)]
        lines += [name + b": " + value for name, value in head.headers.raw_items()]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.conn.trailing_data[0]

    async def next_request(self, deadline: float | None, idle_until: float) -> Received | None:
        """Read the next whole request (trio time `deadline` for all of it; None: from its
        first byte on, handshake_timeout). Returns None once the connection is over: the peer
        closed, it stayed idle until `idle_until`, or a refusal was answered (400, 408, 413,
        431)."""
        conn = self.conn
        config = self.door.config
        partial = bool(conn.trailing_data[0])  # some bytes of this request are here
        if deadline is None and partial:
            deadline = trio.current_time() + config.handshake_timeout
        head: h11.Request | None = None
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431:
                    await self.refuse(431, "headers_too_large", _too_large_head(config))
                else:
                    await self.refuse(status, "bad_request", f"not a valid HTTP request: {exc}")
                return None
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(status_code=100, headers=[])
                    await self._send(conn.send(go_on) or b"")
                data = None
                with trio.move_on_at(deadline if deadline is not None else idle_until):
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                if data is None:  # too slow: a 408 if the head came, else just close
                    if head is not None:
                        await self.refuse(408, "request_timeout", "the request came too slowly")
                    return None
                if not partial and data:
                    partial = True
                    if deadline is None:
                        deadline = trio.current_time() + config.handshake_timeout
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                head = event
                self.method = event.method
                headers, size, repeated = _read_headers(event)
                if size > config.max_header_bytes:
                    await self.refuse(431, "headers_too_large", _too_large_head(config))
                    return None
                refusal = _refused_head(event, headers, repeated)
                if refusal is not None:
                    await self.refuse(*refusal)
                    return None
                length = headers.get("content-length")  # h11 checked it: digits, one value
                if length is not None and int(length) > config.max_body_bytes:
                    await self.refuse(413, "body_too_large", _too_large_body(config))
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > config.max_body_bytes:
                    await self.refuse(413, "body_too_large", _too_large_body(config))
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Received(head, headers, bytes(body))
            else:  # ConnectionClosed (the peer is done)
                return None

    async def respond(
        self, response: HttpResponse, host: str | None, *, head_only: bool, close: bool
    ) -> bool:
        """Write `response` (without its body for a HEAD), with the front door's headers.
        False: the connection must close now (asked, or the write failed or timed out)."""
        door = self.door
        close = close or door.closing()
        try:  # a header outside latin-1, or one h11 refuses, is the handler's bug
            headers = [(b"date", door.clock.date())]
            if response.status != 304:
                headers.append((b"content-type", response.content_type.encode("latin-1")))
                headers.append((b"content-length", b"%d" % len(response.body)))
            headers += door.security_headers(host)
            headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
            if close:
                headers.append((b"connection", b"close"))
            data = (
                self.conn.send(
                    h11.Response(
                        status_code=response.status,
                        headers=headers,
                        reason=_REASONS.get(response.status, b""),
                    )
                )
                or b""
            )
            if response.body and not head_only and response.status != 304:
                data += self.conn.send(h11.Data(data=response.body)) or b""
            data += self.conn.send(h11.EndOfMessage()) or b""
        except (h11.LocalProtocolError, UnicodeEncodeError):
            # Nothing was written yet, and h11 refused before changing its state.
            log.exception("invalid response to %s", self.peer)
            return await self.refuse(500, "internal", "the response was invalid; see dagd's log")
        door.requests += 1
        sent = await self._send(data, self.door.config.send_timeout)
        return sent and not close

    async def refuse(
        self,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        text: bool = False,
    ) -> bool:
        """Answer `status` with a JSON error body (`text`: the message as plain text), and
        say the connection closes (returns False, for `return await session.refuse(...)`).
        Best effort: a peer that does not read within REFUSAL_SEND_TIMEOUT seconds is just
        closed."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False  # a response is half written: closing is all that is left
        if text:
            response = HttpResponse(status, message.encode(), headers=headers)
        else:
            response = error_response(status, code, message, headers)
        body = response.body
        lines = [
            (b"date", self.door.clock.date()),
            (b"content-type", response.content_type.encode()),
            (b"content-length", b"%d" % len(body)),
            *self.door.security_headers(None),
            *((name.encode(), value.encode("latin-1")) for name, value in headers),
            (b"connection", b"close"),
        ]
        try:
            response_head = h11.Response(
                status_code=status, headers=lines, reason=_REASONS.get(status, b"")
            )
            data = self.conn.send(response_head) or b""
            if self.method != b"HEAD":
                data += self.conn.send(h11.Data(data=body)) or b""
            data += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return False
        self.door.requests += 1
        await self._send(data, REFUSAL_SEND_TIMEOUT)
        return False

    async def _send(self, data: bytes, timeout: float | None = None) -> bool:
        """Write `data`; False if the peer is gone or did not take it within `timeout`
        seconds (default send_timeout). Most writes go to the socket at once, without a
        timer (ConnectionStream.write_nowait)."""
        try:
            if self.stream.write_nowait(data):
                return True
            with trio.move_on_after(
                timeout if timeout is not None else self.door.config.send_timeout
            ):
                await self.stream.flush()
                return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return False


def _read_headers(request: h11.Request) -> tuple[dict[str, str], int, frozenset[str]]:
    """The request's headers as HttpRequest has them, the size in bytes of its head as
    h11 parsed it (request line, headers, blank line), and the names of the SINGLE_HEADERS
    that came more than once: one pass over h11's list."""
    size = len(request.method) + len(request.target) + 14
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for raw_name, value in request.headers.raw_items():
        size += len(raw_name) + len(value) + 4
        name = raw_name.decode("latin-1").lower()  # h11 checked: a token, ASCII
        text = value.decode("latin-1")
        if name in headers:
            if name in SINGLE_HEADERS:
                repeated.add(name)
            headers[name] = f"{headers[name]}, {text}"
        else:
            headers[name] = text
    return headers, size, frozenset(repeated)


def _refused_head(
    request: h11.Request, headers: dict[str, str], repeated: frozenset[str]
) -> tuple[int, str, str] | None:
    """Why a parsed head is refused before anything else (status, code, message), or None.

    - An HTTP version other than 1.x: 505. h11 parses any `HTTP/d.d` request line, and
      takes HTTP/2's connection preface (`PRI * HTTP/2.0`) for a request.
    - Content-Length with Transfer-Encoding: 400. h11 frames such a body by its chunks, a
      proxy in front might go by the length: the ambiguity request smuggling lives on
      (RFC 9112 section 6.1: a server MAY reject it, and MUST close the connection after).
    - A repeated Host or Origin: 400. Which copy counts (the Host rule, the WebSocket's
      Origin rule) must not depend on who reads the request.
    """
    if not request.http_version.startswith(b"1."):
        if request.method == b"PRI" and request.target == b"*":
            return (
                505,
                "http_version_not_supported",
                "HTTP/2 is not served (the HTTP/2 connection preface was sent): dagd speaks "
                "HTTP/1.1",
            )
        version = request.http_version.decode("ascii", "replace")
        return (
            505,
            "http_version_not_supported",
            f"HTTP/{version} is not served: dagd speaks HTTP/1.1",
        )
    if "transfer-encoding" in headers and "content-length" in headers:
        return (
            400,
            "bad_request",
            "a request with both Content-Length and Transfer-Encoding is refused",
        )
    if repeated:
        names = " and ".join(sorted(name.title() for name in repeated))
        return 400, "bad_request", f"more than one {names} header"
    return None


def _too_large_head(config: ServerConfig) -> str:
    return f"the request head is over {config.max_header_bytes} bytes"


def _too_large_body(config: ServerConfig) -> str:
    return f"the request body is over {config.max_body_bytes} bytes"
