"""What a JSON API request costs the daemon: `GET /api/v1/runs?limit=20` answered from the
kept answer (the runs have not changed) against the same request read and encoded afresh (a
store read in a worker thread, the converter, orjson), and `GET /api/v1/runs/{run_id}`, in the
same run, on a real daemon with a real SQLite file. Handlers are called in process (no
socket: the front door's share is bench/http_front.py's), so the numbers are the route's own.

    python bench/json_api.py              # ~15 s
    python bench/json_api.py --rounds 5 --runs 500

Each round times `--requests` calls of each kind, interleaved; a kind's figure is its best
round: wall time per request (the thread hop included) and this process's CPU time per
request. Ratios are against the fresh read of the run list (a new JsonApi for each such
request, so nothing is kept: building its route table adds a few us).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from dagd.app import open_app
from dagd.core.config import parse_config
from dagd.net.auth import TokenBook
from dagd.net.http.api import JsonApi
from dagd.net.http.message import HttpRequest, HttpResponse, Route

TOKEN = "bench-token"
CONFIG = f"""
progress_interval = 0
[server]
port = 0
[[auth.tokens]]
name = "bench"
role = "read"
token = "{TOKEN}"
"""
DAG = """
[steps.one]
command = "true"
"""


def request(path: str, query: dict[str, list[str]] | None = None) -> HttpRequest:
    headers = {"authorization": f"Bearer {TOKEN}"}
    return HttpRequest("GET", path, query or {}, headers, b"", "127.0.0.1:5000")


def route(routes: list[Route], pattern: str) -> Route:
    return next(r for r in routes if r.pattern == pattern)


async def timed(n: int, call: object) -> tuple[float, float]:
    """(wall s, CPU s) per call of `n` awaited calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        response: HttpResponse = await call()  # type: ignore[operator]
        assert response.status == 200
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


async def main(rounds: int, runs: int, n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="dagd-bench-"))
    (root / "dags").mkdir()
    (root / "dags" / "quick.toml").write_text(DAG)
    config = parse_config(CONFIG, root)
    async with open_app(config, websocket=False) as app:
        daemon = app.daemon
        run_ids = [await daemon.trigger("quick") for _ in range(runs)]
        while any(
            r.status not in ("success", "failed") for r in await daemon.list_runs(None, 1000)
        ):
            await trio.sleep(0.1)
        book = TokenBook.from_config(config)
        kept = route(JsonApi(daemon, book).routes(), "/api/v1/runs")
        runs_req = request("/api/v1/runs", {"limit": ["20"]})
        one = route(JsonApi(daemon, book).routes(), "/api/v1/runs/{run_id}")
        one_req = request(f"/api/v1/runs/{run_ids[-1]}")

        async def fresh_list() -> HttpResponse:
            # A new handler has nothing kept: the store read and the encoding every time.
            handler = route(JsonApi(daemon, book).routes(), "/api/v1/runs").handler
            return await handler(runs_req, {})

        async def kept_list() -> HttpResponse:
            return await kept.handler(runs_req, {})

        async def get_run() -> HttpResponse:
            return await one.handler(one_req, {"run_id": run_ids[-1]})

        kinds = {"runs, read afresh": fresh_list, "runs, kept": kept_list, "one run": get_run}
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, call in kinds.items():
                wall, cpu = await timed(n, call)
                old = best.get(name, (wall, cpu))
                best[name] = (min(wall, old[0]), min(cpu, old[1]))
        base_wall, base_cpu = best["runs, read afresh"]
        print(f"{runs} runs stored; {n} requests x {rounds} rounds per kind (best round)")
        print(f"{'request':<22}{'wall us':>10}{'CPU us':>10}{'wall ratio':>12}{'CPU ratio':>11}")
        for name, (wall, cpu) in best.items():
            print(
                f"{name:<22}{wall * 1e6:>10.1f}{cpu * 1e6:>10.1f}"
                f"{wall / base_wall:>12.3f}{cpu / base_cpu:>11.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.runs, args.requests)
