"""Python steps for the outputs tests: they return outputs, or read their upstreams'."""

from __future__ import annotations

import json
from typing import Any

from dagd import StepContext


def give(ctx: StepContext) -> dict[str, Any]:
    return {"count": 3, "label": "a b", "items": [1, "x"], "ok": True, "none": None}


async def give_async(ctx: StepContext) -> dict[str, Any]:
    return {"where": "loop"}


def seen(ctx: StepContext) -> dict[str, Any]:
    """Hands on what it received, as JSON text, so a test can read it from the outputs."""
    return {"seen": json.dumps(ctx.outputs, sort_keys=True)}


def bad_key(ctx: StepContext) -> dict[str, Any]:
    return {"fine": 1, "not-fine": 2}


def too_big(ctx: StepContext) -> dict[str, Any]:
    return {"blob": "x" * 70_000}


def returns_a_number(ctx: StepContext) -> int:
    return 42


def give_big(ctx: StepContext) -> dict[str, Any]:
    """Outputs of 40,000 bytes: more than one message of a Dask worker's event topic."""
    return {"blob": "b" * 40_000, "upstream": ctx.outputs.get("sh", {}).get("n", "none")}
