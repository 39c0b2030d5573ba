"""Following step logs over the WebSocket (`follow_log`): throughput, events beside a log, and
what idle follows cost.

    python bench/log_follow.py            # ~30 s
    python bench/log_follow.py --mib 8    # a smaller log

One process: a real daemon (`open_app(config, websocket=True)`, SQLite store, local executor)
and trio-websocket clients on 127.0.0.1, in one trio loop. Each line prints the ratio to a
baseline measured in the same run:

1. throughput: MiB/s of a finished `--mib` MiB log followed by one client, an asyncio
   `websockets` client in a process of its own (its start included) and a trio-websocket
   client in the daemon's own loop (which then shares the CPU with it), against reading it in
   the daemon with `Daemon.read_log` in a loop (the source's own rate: file reads in worker
   threads, no network, no JSON).
2. events beside a log: delivery latency (publish -> receipt, p50 and p99) of events published
   every 10 ms to a client, while that same client follows the `--mib` MiB log, against the
   same client with no follow.
3. idle follows: the process's CPU time per second with `--follows` follows of running steps
   that write nothing (each polled every 0.2 s), against none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from dagd.app import open_app
from dagd.core.config import parse_config
from dagd.core.events import ErrorEvent
from dagd.daemon.daemon import Daemon

TOKEN = "bench-token-0123456789"
#: A follower in a process of its own: argv url, token, run id; prints the bytes followed.
ASYNCIO_CLIENT = """
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main(url, token, run_id):
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        await ws.recv()
        await ws.send(json.dumps({"type": "follow_log", "runId": run_id, "stepId": "cat"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "log_end":
                print(frame["offset"])
                return
asyncio.run(main(*sys.argv[1:]))
"""


def make_config(root: Path, big: Path, gate: Path) -> str:
    dags = root / "dags"
    dags.mkdir()
    (dags / "big.toml").write_text(f'[steps.cat]\ncommand = "cat {big}"\n')
    (dags / "idle.toml").write_text(
        f"max_active_runs = 1000\n[steps.wait]\n"
        f"command = 'while [ ! -e {gate} ]; do sleep 0.2; done'\n"
    )
    return f"""
progress_interval = 0
reload_interval = "1h"
max_parallel_steps = 1000
[server]
port = 0
heartbeat_interval = "1h"
send_timeout = 30
[[auth.tokens]]
name = "bench"
role = "operate"
token = "{TOKEN}"
"""


async def request(ws: WebSocketConnection, message: dict[str, object]) -> dict[str, object]:
    await ws.send_message(json.dumps(message))
    while True:
        answer = json.loads(await ws.get_message())
        if "seq" not in answer and answer.get("type") not in ("log_chunk", "log_end"):
            return answer  # type: ignore[no-any-return]


async def wait_status(daemon: Daemon, run_id: str, status: str) -> None:
    while True:
        found = await daemon.get_run(run_id)
        if found is not None and found[0].status == status:
            return
        await trio.sleep(0.02)


async def follow_all(ws: WebSocketConnection, run_id: str, step: str) -> tuple[int, list[float]]:
    """Follow a log to its end; (bytes, event latencies in ms seen meanwhile)."""
    await ws.send_message(json.dumps({"type": "follow_log", "runId": run_id, "stepId": step}))
    size, lat = 0, list[float]()
    while True:
        raw = await ws.get_message()
        now = time.time()
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "log_chunk":
            size = frame["nextOffset"]
        elif kind == "log_end":
            return size, lat
        elif kind == "error" and "data" in frame:
            lat.append((now - float(frame["data"]["error"])) * 1000)


async def publisher(daemon: Daemon, stop: trio.Event) -> None:
    while not stop.is_set():
        daemon.publish(ErrorEvent("noise", None, None, repr(time.time()), time.time()))
        await trio.sleep(0.01)


async def events_only(ws: WebSocketConnection, seconds: float) -> list[float]:
    lat = []
    with trio.move_on_after(seconds):
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") == "error" and "data" in frame:
                lat.append((time.time() - float(frame["data"]["error"])) * 1000)
    return lat


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="dagd-bench-logs-"))
    big, gate = root / "big.bin", root / "gate"
    big.write_bytes((b"0123456789abcdef" * 4 + b"\n") * (args.mib * 1024 * 1024 // 65))
    config = parse_config(make_config(root, big, gate), root)
    async with open_app(config, websocket=True) as app:
        daemon = app.daemon
        assert app.server is not None and app.server.url is not None
        url = app.server.url

        async def connected() -> WebSocketConnection:
            ws: WebSocketConnection = await nursery.start(hold, url)
            return ws

        async with trio.open_nursery() as nursery:
            run_id = await daemon.trigger("big")
            await wait_status(daemon, run_id, "success")
            size = big.stat().st_size

            # 1. throughput
            t0 = time.perf_counter()
            offset = 0
            while True:
                piece = await daemon.read_log(run_id, "cat", offset=offset)
                if not piece.data:
                    break
                offset = piece.next_offset
            base = time.perf_counter() - t0
            ws = await connected()
            t0 = time.perf_counter()
            got, _ = await follow_all(ws, run_id, "cat")
            over = time.perf_counter() - t0
            assert got == size, (got, size)
            t0 = time.perf_counter()
            out = await trio.run_process(
                [sys.executable, "-c", ASYNCIO_CLIENT, url, TOKEN, run_id], capture_stdout=True
            )
            apart = time.perf_counter() - t0
            assert int(out.stdout) == size, out.stdout
            mib = size / 2**20
            print(
                f"throughput: {mib / apart:.0f} MiB/s to an asyncio `websockets` client in its"
                f" own process (start included), {mib / over:.0f} MiB/s to a trio-websocket"
                f" client in the daemon's loop, {mib / base:.0f} MiB/s read_log in the daemon;"
                f" ratios {base / apart:.2f}, {base / over:.2f}"
            )

            # 2. events beside a log
            await request(ws, {"type": "subscribe", "dagIds": ["noise"]})
            stop = trio.Event()
            nursery.start_soon(publisher, daemon, stop)
            alone = await events_only(ws, args.seconds)
            _, beside = await follow_all(ws, run_id, "cat")
            stop.set()
            await trio.sleep(0.1)
            print(
                f"events: p50/p99 {pct(alone, 0.5):.1f}/{pct(alone, 0.99):.1f} ms alone "
                f"({len(alone)}), {pct(beside, 0.5):.1f}/{pct(beside, 0.99):.1f} ms beside a "
                f"{args.mib} MiB log ({len(beside)}); p99 ratio "
                f"{pct(beside, 0.99) / max(pct(alone, 0.99), 1e-9):.2f}"
            )

            # 3. idle follows
            runs = [await daemon.trigger("idle") for _ in range(args.follows)]
            for r in runs:
                await wait_status(daemon, r, "running")
            await trio.sleep(0.5)
            c0, t0 = cpu(), time.perf_counter()
            await trio.sleep(args.seconds)
            idle = (cpu() - c0) / (time.perf_counter() - t0)
            clients = [await connected() for _ in range((args.follows + 7) // 8)]
            for i, r in enumerate(runs):
                ws_i = clients[i // 8]
                await ws_i.send_message(
                    json.dumps({"type": "follow_log", "runId": r, "stepId": "wait"})
                )
            await trio.sleep(0.5)
            c0, t0 = cpu(), time.perf_counter()
            await trio.sleep(args.seconds)
            busy = (cpu() - c0) / (time.perf_counter() - t0)
            per = (busy - idle) / args.follows * 1000
            print(
                f"idle follows: CPU {idle * 1000:.1f} ms/s with {args.follows} running steps,"
                f" {busy * 1000:.1f} ms/s when they are followed too; {per:.2f} ms/s per"
                f" follow; ratio {busy / max(idle, 1e-3):.2f}"
            )
            gate.touch()
            nursery.cancel_scope.cancel()


async def hold(
    url: str, *, task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_websocket_url(url, max_message_size=16 * 2**20) as ws:
        await ws.send_message(json.dumps({"type": "auth", "token": TOKEN}))
        assert json.loads(await ws.get_message())["type"] == "auth_success"
        task_status.started(ws)
        await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="log size in MiB")
    parser.add_argument("--follows", type=int, default=64, help="idle follows")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    sys.exit(trio.run(main, parser.parse_args()))
