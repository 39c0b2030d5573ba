"""`Authorization: Bearer <token>` on plain HTTP routes, checked as the WebSocket's `auth` is.

The same `TokenBook` (SHA-256 digests compared in constant time, roles `read` and `operate`)
and the same `AuthThrottle` instance as the WebSocket (dagd/net/auth.py), keyed by the peer's
address: wrong tokens over HTTP slow down wrong tokens over the WebSocket from that address
and the other way round. A refusal is 401 with `WWW-Authenticate: Bearer` (RFC 6750) and the
JSON API's error body, code `auth_required` (no usable header) or `auth_failed` (no token
matches).
"""

from __future__ import annotations

import logging

import trio

from dagd.core.protocol.codes import ErrorCode
from dagd.net.auth import AuthThrottle, TokenBook, TokenEntry
from dagd.net.http.message import HttpRequest, HttpResponse, error_response

log = logging.getLogger(__name__)

CHALLENGE = 'Bearer realm="dagd"'
NO_STORE = ("cache-control", "no-store")


def peer_host(peer: str) -> str:
    """The address part of `HttpRequest.peer` ("127.0.0.1:5000" -> "127.0.0.1",
    "[::1]:5000" -> "::1"): the throttle counts failures per address, as the WebSocket does."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
        return peer  # no port, or a bare IPv6 address
    return host.removeprefix("[").removesuffix("]")


def bearer_token(request: HttpRequest) -> str | None:
    """The token of the request's `Authorization: Bearer <token>` header (scheme in any
    case, RFC 7235), or None without one."""
    scheme, _, token = (request.header("authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def bearer_entry(
    tokens: TokenBook, throttle: AuthThrottle, request: HttpRequest
) -> TokenEntry | HttpResponse:
    """The token entry the request's bearer token matches, or the 401 response to send.

    A wrong token counts as a failure of the peer's address and is answered after the
    throttle's delay (0 for the first; then 0.25 s doubling up to 5 s); a right one clears the
    address's failures, at once. A missing header is not a failure (a client's first try,
    before it knows a token is needed).
    """
    token = bearer_token(request)
    if token is None:
        return error_response(
            401,
            ErrorCode.AUTH_REQUIRED,
            "send the token as 'Authorization: Bearer <token>'",
            (("www-authenticate", CHALLENGE), NO_STORE),
        )
    entry = tokens.check(token)
    host = peer_host(request.peer)
    if entry is None:
        throttle.failed(host)
        delay = throttle.delay(host)
        if delay:
            await trio.sleep(delay)
        log.warning("auth failed from %s over HTTP", host)  # never the token itself
        return error_response(
            401,
            ErrorCode.AUTH_FAILED,
            "invalid token",
            (("www-authenticate", f'{CHALLENGE}, error="invalid_token"'), NO_STORE),
        )
    throttle.succeeded(host)
    return entry
