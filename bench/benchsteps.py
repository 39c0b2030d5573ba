"""No-op step callables for the benchmarks (`benchsteps:<name>`; bench/ is sys.path[0])."""

from __future__ import annotations


async def async_noop(ctx: object) -> None:
    return None


def sync_noop(ctx: object) -> None:
    return None


async def async_three_outputs(ctx: object) -> dict[str, object]:
    """Three outputs, as a step handing a count, a name and a number downstream would."""
    return {"a": 1, "b": "two", "c": 3.0}
