"""No-op step callables for the benchmarks (`benchsteps:<name>`; bench/ is sys.path[0])."""

from __future__ import annotations


async def async_noop(ctx: object) -> None:
    return None


def sync_noop(ctx: object) -> None:
    return None
