"""The route table's entries, one route module per line.

Each module exposes `routes(ctx: HttpContext) -> list[Route]` (dagd/net/http/context.py). The
front door (dagd/net/http/frontdoor.py) builds its router from `all_routes(ctx)` once, when
the server starts; a pattern claimed twice for one method is a programming error (ValueError
at start).
"""

from __future__ import annotations

from dagd.net.http import api, health, metrics, static
from dagd.net.http.context import HttpContext
from dagd.net.http.message import Route


def all_routes(ctx: HttpContext) -> list[Route]:
    """Every route dagd serves over plain HTTP, module by module."""
    return [
        # One line per route module, e.g. `*health.routes(ctx),`.
        *api.routes(ctx),
        *health.routes(ctx),
        *metrics.routes(ctx),
        *static.routes(ctx),
    ]
