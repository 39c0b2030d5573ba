"""Callables for dags/report.toml: each receives a `dagd.StepContext` (which attempt of which
step of which run this is, the run's params, the outputs of the steps upstream, and `log()` for
the attempt's log file) and returns its own outputs, which the steps downstream receive."""

from __future__ import annotations

import random
import statistics

import trio

from dagd import StepContext


async def fetch(ctx: StepContext) -> dict[str, list[float]]:
    """An async step: waits on I/O without taking a thread. Its values go downstream as an
    output (at most 64 KiB of JSON: about 5,000 of them)."""
    await trio.sleep(0.2)  # stands in for a network call
    rng = random.Random(ctx.run_id)
    values = [round(rng.gauss(100, 15), 2) for _ in range(int(ctx.params["sample_size"]))]
    ctx.log(f"fetched {len(values)} values")
    return {"values": values}


def summarise(ctx: StepContext) -> dict[str, float]:
    """A sync step: runs in a worker thread, so CPU work does not stall the daemon."""
    values = ctx.outputs["fetch"]["values"]
    summary = {
        "mean": round(statistics.fmean(values), 3),
        "stdev": round(statistics.stdev(values), 3),
    }
    ctx.log(f"summary: {summary}")
    return summary


def check(ctx: StepContext) -> None:
    """Fail the run if the summary's mean is out of range (raises ValueError)."""
    mean = ctx.outputs["summarise"]["mean"]
    if not 80 <= mean <= 120:
        raise ValueError(f"mean {mean:.1f} is out of range")
    ctx.log("check passed")
