"""Callables for dags/report.toml: each receives a `dagd.StepContext` (which attempt of which
step of which run this is, the run's params, and `log()` for the attempt's log file)."""

from __future__ import annotations

import json
import random
import statistics
import tempfile
from pathlib import Path

import trio

from dagd import StepContext


def _scratch(ctx: StepContext) -> Path:
    folder = Path(tempfile.gettempdir()) / "dagd-report"
    folder.mkdir(exist_ok=True)
    return folder / f"{ctx.run_id.replace(':', '_')}.json"


async def fetch(ctx: StepContext) -> None:
    """An async step: waits on I/O without taking a thread."""
    await trio.sleep(0.2)  # stands in for a network call
    rng = random.Random(ctx.run_id)
    values = [rng.gauss(100, 15) for _ in range(int(ctx.params["sample_size"]))]
    _scratch(ctx).write_text(json.dumps(values))
    ctx.log(f"fetched {len(values)} values")


def summarise(ctx: StepContext) -> None:
    """A sync step: runs in a worker thread, so CPU work does not stall the daemon."""
    values = json.loads(_scratch(ctx).read_text())
    summary = {"mean": statistics.fmean(values), "stdev": statistics.stdev(values)}
    _scratch(ctx).write_text(json.dumps(summary))
    ctx.log(f"summary: {summary}")


def check(ctx: StepContext) -> None:
    """Fail the run if the summary's mean is out of range (raises ValueError)."""
    summary = json.loads(_scratch(ctx).read_text())
    _scratch(ctx).unlink()
    if not 80 <= summary["mean"] <= 120:
        raise ValueError(f"mean {summary['mean']:.1f} is out of range")
    ctx.log("check passed")
