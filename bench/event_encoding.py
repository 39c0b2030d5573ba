"""What encoding one DAG event costs: `encode_event` (the daemon's hot path: every event passes
through it once, before the store and the fan-out) against the plain standard-library way of
writing the same text, measured interleaved in the same run.

    python bench/event_encoding.py             # ~10 s
    python bench/event_encoding.py --rounds 5

Three ways, one text (checked equal before timing):
- encode_event: the envelope as plain text, `data` through orjson (dagd.core.protocol.wire);
- stdlib data: the same envelope, `data` through the public `json.JSONEncoder` (what dagd would
  use without orjson);
- json.dumps: `json.dumps(event_to_wire(event), separators=(",", ":"), ensure_ascii=False)`,
  the definition the encoder must match (tests/core/test_core_protocol.py).
Each round takes the best of 15 interleaved timings per way; ratios are against json.dumps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit

from dagd.core.events import (
    EVENT_TYPES,
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import RunStatus, StepStatus
from dagd.core.protocol.converter import converter
from dagd.core.protocol.events import encode_event, event_to_wire
from dagd.core.protocol.wire import dumps

T = 1_704_110_400.0
RUN = "manual__2024-01-01T12:00:00.123456+00:00"
#: One of each kind, as a run of one step publishes them (plus an error).
EVENTS: list[DagEvent] = [
    DagRunStatusEvent("etl", RUN, RunStatus.RUNNING, T, seq=5),
    StepStatusEvent("etl", RUN, "extract", StepStatus.RUNNING, T, None, None, 0, None, T, seq=6),
    StepStatusEvent(
        "etl", RUN, "extract", StepStatus.SUCCESS, T, T + 3, 3000, 0, None, T + 3.001, seq=7
    ),
    DagRunProgressEvent("etl", RUN, 4, 2, 1, 0, 1, 50.0, T + 3.5, seq=8),
    ErrorEvent("etl", RUN, "load", "exit code 1: Failed to process data ✓", T + 4, seq=9),
]


_PREFIX = {cls: '{"type":' + json.dumps(name) for cls, name in EVENT_TYPES.items()}
_UNSTRUCTURE = {cls: converter.get_unstructure_hook(cls) for cls in EVENT_TYPES}


def stdlib_data(event: DagEvent) -> str:
    cls = type(event)
    return f'{_PREFIX[cls]},"seq":{event.seq},"data":{dumps(_UNSTRUCTURE[cls](event))}}}'


def reference(event: DagEvent) -> str:
    return json.dumps(event_to_wire(event), separators=(",", ":"), ensure_ascii=False)


WAYS = {"encode_event": encode_event, "stdlib data": stdlib_data, "json.dumps": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for event in EVENTS:
        assert encode_event(event) == stdlib_data(event) == reference(event)
    number = 2000
    ratios: dict[str, list[float]] = {name: [] for name in WAYS}
    for n in range(1, args.rounds + 1):
        best = dict.fromkeys(WAYS, float("inf"))
        for _ in range(15):  # interleaved: a load spike hits every way alike
            for name, way in WAYS.items():
                took = timeit.timeit(lambda w=way: [w(e) for e in EVENTS], number=number)
                best[name] = min(best[name], took / (number * len(EVENTS)) * 1e6)
        base = best["json.dumps"]
        for name in WAYS:
            ratios[name].append(best[name] / base)
        print(
            f"round {n}: "
            + "  ".join(f"{name} {best[name]:.2f} µs ({best[name] / base:.2f})" for name in WAYS)
        )
    print(
        "median ratio vs json.dumps: "
        + "  ".join(f"{name} {statistics.median(r):.2f}" for name, r in ratios.items())
    )


if __name__ == "__main__":
    main()
