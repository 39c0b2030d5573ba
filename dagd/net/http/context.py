"""What a route module is given: the daemon's interface, the config, the tokens, and the
server's counters, all read at request time.

A route module (health.py, api.py, static.py, ...) exposes

    def routes(ctx: HttpContext) -> list[Route]

and gets one line in `dagd/net/http/routes.py`. Its handlers close over `ctx`; they never see
h11, the socket or the server object itself.
"""

from __future__ import annotations

import importlib.metadata
from typing import Protocol

import attrs

from dagd.core.config import Config
from dagd.daemon.api import DaemonService
from dagd.net.auth import AuthThrottle, TokenBook


class NetStats(Protocol):
    """The network layer's counters, read when a route asks (the server implements it).

    Gauges are "now"; totals count since the server started.
    """

    @property
    def connections(self) -> int:
        """WebSockets open now (accepted, authenticated or not)."""

    @property
    def authenticated_clients(self) -> int:
        """WebSockets open now that have authenticated."""

    @property
    def handshaking(self) -> int:
        """TCP connections whose request head or WebSocket handshake is not finished."""

    @property
    def http_connections(self) -> int:
        """Plain HTTP connections (the front door's, not WebSockets) open now."""

    @property
    def http_requests(self) -> int:
        """Plain HTTP requests answered since start, any status (refusals included)."""

    @property
    def busy_refused(self) -> int:
        """Connections closed unread (total): max_connections were pending already."""

    @property
    def slow_closed(self) -> int:
        """WebSockets closed with 1013 for falling behind (total)."""

    @property
    def events_delivered(self) -> int:
        """Live events written to WebSocket clients, one per client (total)."""

    @property
    def events_replayed(self) -> int:
        """Events written to WebSocket clients by replays (total)."""


@attrs.frozen
class HttpContext:
    """Everything a route module may use.

    `started` is `time.monotonic()` when the server started (seconds); `version` is dagd's
    package version ("0.1.0").
    """

    daemon: DaemonService
    config: Config
    tokens: TokenBook
    throttle: AuthThrottle
    net: NetStats
    started: float
    version: str


def dagd_version() -> str:
    """dagd's installed version, or "unknown" when run from a tree without metadata."""
    try:
        return importlib.metadata.version("dagd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
