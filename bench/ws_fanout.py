"""WebSocket event fan-out: dagd's server against a bare trio-websocket broadcast, over loopback.

    python bench/ws_fanout.py                 # 10, 100, 1000 clients, 5 s per scenario (~1.5 min)
    python bench/ws_fanout.py --quick         # 2 s per scenario
    python bench/ws_fanout.py --wait-quiet 30 # wait up to 30 s before each scenario for a quiet CPU
    python bench/ws_fanout.py --profile 1000  # cProfile the daemon's trio thread (1000 clients)

Exit status 0 when every requirement holds: dagd/baseline deliveries/s >= 1.5, p99 < 100 ms at half
of dagd's maximum rate (100 and 1000 clients), < 100 MB RSS for 1000 idle connections.

Processes (all on 127.0.0.1, each with RLIMIT_NOFILE raised):
- the server under test, in its own process: either a real daemon (`open_app(config,
  websocket=True)`, its events published with `daemon.publish`, so numbered, encoded, written to
  SQLite and fanned out after the commit), or the baseline: a bare `serve_websocket` server
  whose clients each have a task and a queue and get every message with `await
  ws.send_message(msg)`;
- `--procs` client processes (asyncio `websockets`), each holding its share of the connections.
  Every client authenticates and subscribes to "*" (the baseline answers both messages too).

Each event is an ErrorEvent of ~200 bytes on the wire whose `error` text starts with its publish
time (`time.time()` in the server process); the client subtracts it from its receipt time.

Max-rate scenario: the publisher publishes as fast as it is allowed for `--duration` seconds, in
bursts (at most `--burst` events every 2 ms), keeping at most `window` events in flight per
client, where window = max(10, --inflight / clients) and "in flight" = published minus what the
slowest client has received (client processes post their counts in a shared memory page). So
the queues stay bounded, no client is dropped, and the end-of-run drain is short; the latency
of this scenario is mostly the time an event waits in that window.
deliveries/s = messages received by all clients / (last receipt - first publish).
Server CPU per delivery = utime+stime of the server process (/proc/PID/stat, all its threads:
SQLite writer included) over the run and its drain, divided by the deliveries. Each line also
shows the CPU of the client processes and of every other process on the machine (/proc/stat):
on a shared machine the last one says how much the numbers were disturbed.

Half-rate scenario (dagd only, 100 and 1000 clients): a fixed rate of half the measured maximum,
published every 10 ms, with the p99 latency. For dagd the benchmark also wraps the store's
`on_commit` hook in the daemon process to report how long events waited from `publish` to the
fan-out (the SQLite commit, and the event loop getting to it).

Memory: VmRSS of a fresh daemon with 0 connections, then with 1000 authenticated, subscribed,
idle connections.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import mmap
import os
import pstats
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
EVENT_BYTES = 200
PREFIX = '{"type":"error","seq":'
ERROR_KEY = '"error":"'
TICK_MAX = 0.002  # max-rate publisher: one burst every 2 ms at most
TICK_RATE = 0.010  # fixed-rate publisher: every 10 ms
RATIO_MIN = 1.5
P99_MAX_MS = 100.0
MEM_MAX_MB = 100.0

# Shared page (int64 slots): [0] published in this run; per client process p:
# [2 + 2p] = fewest events any of its connections received in this run, [3 + 2p] = total.
SHM_SLOTS = 64


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_shm(path: str) -> tuple[mmap.mmap, memoryview]:
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, SHM_SLOTS * 8)
    finally:
        os.close(fd)
    return mm, memoryview(mm).cast("q")


# =====================================================================================
# server processes (trio)
# =====================================================================================


def make_padding() -> str:
    from dagd.core.events import ErrorEvent
    from dagd.core.protocol.events import encode_event

    probe = encode_event(
        ErrorEvent("bench", None, None, f"{time.time():.6f} ", time.time(), seq=100_000)
    )
    return "x" * max(0, EVENT_BYTES - len(probe.encode()))


async def read_lines(stream):  # type: ignore[no-untyped-def]
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.decode().strip()


def reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def publisher_loop(publish_one, shm: memoryview, nprocs: int, command: dict) -> dict:  # type: ignore[no-untyped-def]
    """Publish per `command` (max-rate with a window, or a fixed rate); returns a summary."""
    import trio

    shm[0] = 0
    published = 0
    duration = command["duration"]
    t_first = time.time()
    start = trio.current_time()
    deadline = start + duration
    if command["mode"] == "max":
        window, burst = command["window"], command["burst"]
        acks = [2 + 2 * p for p in range(nprocs)]
        while trio.current_time() < deadline:
            acked = min(shm[i] for i in acks)
            n = min(burst, window - (published - acked))
            for _ in range(n):
                publish_one()
            if n > 0:
                published += n
                shm[0] = published
            await trio.sleep(TICK_MAX)
    else:
        rate = command["rate"]
        tick = 0
        while True:
            now = trio.current_time()
            if now >= deadline:
                break
            due = int((now - start) * rate) - published
            for _ in range(due):
                publish_one()
            if due > 0:
                published += due
                shm[0] = published
            tick += 1
            await trio.sleep_until(start + tick * TICK_RATE)
    return {"published": published, "t_first": t_first, "t_end": time.time()}


async def serve_commands(publish_one, shm: memoryview, nprocs: int, extra=None) -> None:  # type: ignore[no-untyped-def]
    import trio

    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    profiler: cProfile.Profile | None = None
    async for line in read_lines(stream):
        if not line:
            continue
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            return
        if op == "run":
            reply(await publisher_loop(publish_one, shm, nprocs, command))
        elif op == "profile_on":
            profiler = cProfile.Profile()  # wall clock: profile on a quiet machine
            profiler.enable()
            reply({"ok": True})
        elif op == "profile_off":
            assert profiler is not None
            profiler.disable()
            profiler.dump_stats(command["path"])
            profiler = None
            reply({"ok": True})
        elif op == "stats":
            reply(extra() if extra is not None else {})
        else:
            reply({"error": f"unknown op {op}"})


def dagd_server_main(args: argparse.Namespace) -> None:
    import trio

    from dagd.app import open_app
    from dagd.core.config import parse_config
    from dagd.core.events import ErrorEvent

    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    base = Path(args.base)
    (base / "dags").mkdir(parents=True, exist_ok=True)
    config = parse_config(
        f"""
dags_dir = {json.dumps(str(base / "dags"))}
state_dir = {json.dumps(str(base / "state"))}
[server]
host = "{HOST}"
port = 0
max_connections = 2000
send_buffer = 100000
rate_limit = 100000
heartbeat_interval = "1h"
ping_interval = "1h"
[[auth.tokens]]
token = "{TOKEN}"
role = "read"
""",
        base,
    )
    _mm, shm = open_shm(args.shm)
    pad = make_padding()

    async def main() -> None:
        async with open_app(config, websocket=True) as app:
            daemon, server = app.daemon, app.server
            assert server is not None and server.port is not None
            publish = daemon.publish
            clock = time.time

            def publish_one() -> None:
                t = clock()
                publish(ErrorEvent("bench", None, None, f"{t:.6f} {pad}", t))

            reply({"port": server.port})

            # Instrumentation (the benchmark's, not dagd's): how long each event waited between
            # daemon.publish and the fan-out that follows its SQLite commit.
            lags = array("d")
            commits = [0]
            fan_out = daemon.store.on_commit
            assert fan_out is not None

            def on_commit(batch: list) -> None:
                now = clock()
                for stored in batch:
                    lags.append(now - stored.event.timestamp)
                events[0] += len(batch)
                commits[0] += 1
                fan_out(batch)

            daemon.store.on_commit = on_commit
            # The WebSocket server builds each event's frame once for all clients
            # (dagd/net/frames.py): frames built per committed event should stay 1.0.
            events = [0]
            built = [server.frames.built]

            def stats() -> dict:
                frames_per_event = (server.frames.built - built[0]) / max(1, events[0])
                built[0] = server.frames.built
                events[0] = 0
                out = {
                    "frames_per_event": frames_per_event,
                    "subscribers": daemon.hub.subscriber_count,
                    "dropped": daemon.hub.dropped_subscribers,
                    "commits": commits[0],
                    "commit_p50_ms": 1000 * pct(lags, 0.5),
                    "commit_p99_ms": 1000 * pct(lags, 0.99),
                }
                del lags[:]
                commits[0] = 0
                return out

            await serve_commands(publish_one, shm, args.nprocs, stats)

    trio.run(main)


def baseline_server_main(args: argparse.Namespace) -> None:
    import trio
    from trio_websocket import ConnectionClosed, serve_websocket

    from dagd.core.events import ErrorEvent
    from dagd.core.protocol.events import encode_event

    raise_nofile()
    _mm, shm = open_shm(args.shm)
    pad = make_padding()
    queues: set[trio.MemorySendChannel[str]] = set()
    seq = 0

    def publish_one() -> None:
        nonlocal seq
        seq += 1
        t = time.time()
        msg = encode_event(ErrorEvent("bench", None, None, f"{t:.6f} {pad}", t, seq=seq))
        for q in queues:
            q.send_nowait(msg)

    async def handler(request) -> None:  # type: ignore[no-untyped-def]
        try:
            ws = await request.accept()
            await ws.get_message()  # auth
            await ws.send_message('{"type":"auth_success","role":"read"}')
            await ws.get_message()  # subscribe
            await ws.send_message('{"type":"subscribed","dagIds":["*"]}')
            send, receive = trio.open_memory_channel[str](float("inf"))
            queues.add(send)
            try:
                async with trio.open_nursery() as nursery:

                    async def writer() -> None:
                        async for msg in receive:
                            await ws.send_message(msg)

                    nursery.start_soon(writer)
                    while True:
                        await ws.get_message()
            finally:
                queues.discard(send)
        except (ConnectionClosed, trio.BrokenResourceError, OSError):
            pass
        except BaseExceptionGroup as group:
            rest = group.split((ConnectionClosed, trio.BrokenResourceError, OSError))[1]
            if rest is not None:
                raise

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    handler,
                    HOST,
                    0,
                    None,
                    connect_timeout=10,
                    disconnect_timeout=2,
                    task_status=task_status,
                )
            )
            reply({"port": server.port})
            await serve_commands(publish_one, shm, args.nprocs, lambda: {"clients": len(queues)})
            nursery.cancel_scope.cancel()

    trio.run(main)


# =====================================================================================
# client processes (asyncio websockets)
# =====================================================================================


def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    asyncio.run(client_async(args))


async def client_async(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    _mm, shm = open_shm(args.shm)
    min_slot, total_slot = 2 + 2 * args.slot, 3 + 2 * args.slot
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    conns: list = []
    tasks: list[asyncio.Task] = []
    counts: list[int] = []
    lat = array("d")
    state = {"last": 0.0, "closed": 0}

    async def reader(i: int, ws) -> None:  # type: ignore[no-untyped-def]
        append = lat.append
        clock = time.time
        find = str.find
        try:
            async for msg in ws:
                if msg.startswith(PREFIX):
                    now = clock()
                    k = find(msg, ERROR_KEY, 30) + 9
                    append(now - float(msg[k : find(msg, " ", k)]))
                    counts[i] += 1
                    state["last"] = now
        except ConnectionClosed:
            pass
        state["closed"] += 1

    async def acker() -> None:
        while True:
            if counts:
                shm[min_slot] = min(counts)
                shm[total_slot] = sum(counts)
            await asyncio.sleep(0.002)

    async def open_one(url: str, sem: asyncio.Semaphore):  # type: ignore[no-untyped-def]
        async with sem:
            ws = await connect(
                url,
                compression=None,
                ping_interval=None,
                proxy=None,
                open_timeout=30,
                close_timeout=2,
                max_queue=1024,
            )
            await ws.send(json.dumps({"type": "auth", "token": TOKEN}))
            while '"auth_success"' not in await ws.recv():
                pass
            await ws.send(json.dumps({"type": "subscribe", "dagIds": ["*"]}))
            while '"subscribed"' not in await ws.recv():
                pass
            return ws

    ack_task = asyncio.create_task(acker())
    while True:
        line = (await stdin.readline()).decode()
        if not line:
            break
        command = json.loads(line)
        op = command["op"]
        if op == "connect":
            sem = asyncio.Semaphore(32)
            results = await asyncio.gather(
                *(open_one(command["url"], sem) for _ in range(command["n"])),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            conns = [r for r in results if not isinstance(r, BaseException)]
            counts[:] = [0] * len(conns)
            state["closed"] = 0
            tasks = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(conns)]
            reply({"connected": len(conns), "failed": len(failed), "error": repr(failed[:1])})
        elif op == "reset":
            counts[:] = [0] * len(counts)
            del lat[:]
            state["last"] = 0.0
            shm[min_slot] = 0
            shm[total_slot] = 0
            reply({"ok": True})
        elif op == "report":
            with open(command["path"], "wb") as f:
                lat.tofile(f)
            reply(
                {
                    "received": sum(counts),
                    "min": min(counts) if counts else 0,
                    "last": state["last"],
                    "closed": state["closed"],
                }
            )
        elif op == "close":
            await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            conns, tasks = [], []
            counts[:] = []
            shm[min_slot] = 0
            shm[total_slot] = 0
            reply({"ok": True})
        elif op == "quit":
            break
    ack_task.cancel()


# =====================================================================================
# orchestrator
# =====================================================================================

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    return sum(proc_times(pid))


def machine_busy() -> float:
    """CPU seconds spent by the whole machine (all CPUs, not idle or iowait) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Child:
    """A child process spoken to in JSON lines over its stdin/stdout."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),  # noqa: SIM115
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]

    def send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def expect(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        if not self.sel.select(timeout):
            raise TimeoutError(f"pid {self.pid}: no answer in {timeout}s; see {self.log}")
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"pid {self.pid} exited:\n{tail}")
        return json.loads(line)

    def ask(self, obj: dict, timeout: float) -> dict:
        self.send(obj)
        return self.expect(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "quit"})
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


def pct(values: array, q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="dagd-wsbench-"))
        self.shm_path = str(self.tmp / "shm")
        with open(self.shm_path, "wb") as f:
            f.write(b"\0" * SHM_SLOTS * 8)
        self.mm, self.shm = open_shm(self.shm_path)
        self.clients: list[Child] = []
        self.server: Child | None = None
        self.nprocs = args.procs
        self.me = [sys.executable, os.path.abspath(__file__)]

    def start_clients(self) -> None:
        for p in range(self.nprocs):
            argv = [*self.me, "--role", "client", "--shm", self.shm_path, "--slot", str(p)]
            self.clients.append(Child(argv, self.tmp / f"client{p}.log"))

    def start_server(self, kind: str, tag: str) -> int:
        base = self.tmp / tag
        base.mkdir()
        argv = [*self.me, "--role", kind, "--shm", self.shm_path, "--nprocs", str(self.nprocs)]
        argv += ["--base", str(base)]
        self.server = Child(argv, self.tmp / f"{tag}.log")
        return self.server.expect(30)["port"]

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def connect(self, port: int, n: int) -> None:
        url = f"ws://{HOST}:{port}/api/v1/ws"
        shares = [n // self.nprocs + (1 if p < n % self.nprocs else 0) for p in range(self.nprocs)]
        for c, k in zip(self.clients, shares, strict=True):
            c.send({"op": "connect", "url": url, "n": k})
        for c, k in zip(self.clients, shares, strict=True):
            got = c.expect(120)
            if got["connected"] != k:
                raise RuntimeError(f"client connect: {got}")

    def disconnect(self) -> None:
        for c in self.clients:
            c.send({"op": "close"})
        for c in self.clients:
            c.expect(60)

    def wait_quiet(self) -> float:
        """Wait (at most --wait-quiet seconds) until other processes use < 25% of one CPU;
        returns the seconds waited."""
        t0 = time.time()
        ours = [c.pid for c in self.clients] + ([self.server.pid] if self.server else [])
        while time.time() - t0 < self.args.wait_quiet:
            busy0, mine0 = machine_busy(), sum(proc_cpu(p) for p in ours)
            time.sleep(0.5)
            others = machine_busy() - busy0 - (sum(proc_cpu(p) for p in ours) - mine0)
            if others < 0.125:
                break
        return time.time() - t0

    def scenario(self, n: int, command: dict, label: str) -> dict:
        assert self.server is not None
        waited = self.wait_quiet() if self.args.wait_quiet else 0.0
        for c in self.clients:
            c.ask({"op": "reset"}, 10)
        client_cpu0 = sum(proc_cpu(c.pid) for c in self.clients)
        user0, sys0 = proc_times(self.server.pid)
        cpu0 = user0 + sys0
        busy0 = machine_busy()
        wall0 = time.time()
        done = self.server.ask(command, command["duration"] + 30)
        published = done["published"]
        # drain: every connection has everything
        deadline = time.time() + 30
        mins = [2 + 2 * p for p in range(self.nprocs)]
        active = range(self.nprocs)
        while time.time() < deadline:
            if all(self.shm[mins[p]] >= published for p in active):
                break
            time.sleep(0.005)
        drained = all(self.shm[mins[p]] >= published for p in active)
        user1, sys1 = proc_times(self.server.pid)
        cpu = user1 + sys1 - cpu0
        server_stats = self.server.ask({"op": "stats"}, 10)
        client_cpu = sum(proc_cpu(c.pid) for c in self.clients) - client_cpu0
        others = machine_busy() - busy0 - cpu - client_cpu
        wall = time.time() - wall0
        received, last, closed = 0, 0.0, 0
        lat = array("d")
        for p, c in enumerate(self.clients):
            path = self.tmp / f"lat{p}.bin"
            rep = c.ask({"op": "report", "path": str(path)}, 30)
            received += rep["received"]
            last = max(last, rep["last"])
            closed += rep["closed"]
            part = array("d")
            with open(path, "rb") as f:
                part.frombytes(f.read())
            lat.extend(part)
        span = max(last - done["t_first"], 1e-9)
        result = {
            "label": label,
            "clients": n,
            "mode": command["mode"],
            "published": published,
            "expected": published * n,
            "received": received,
            "drained": drained,
            "closed": closed,
            "seconds": span,
            "deliveries_per_s": received / span,
            "events_per_s": published / span,
            "server_cpu_s": cpu,
            "server_cpu_pct": 100 * cpu / wall,
            "cpu_us_per_delivery": 1e6 * cpu / max(received, 1),
            "sys_us_per_delivery": 1e6 * (sys1 - sys0) / max(received, 1),
            "client_cpu_pct": 100 * client_cpu / wall,
            "others_cpu_pct": max(0.0, 100 * others / wall),
            "waited_for_quiet_s": waited,
            "server_stats": server_stats,
            "p50_ms": 1000 * pct(lat, 0.50),
            "p99_ms": 1000 * pct(lat, 0.99),
            "max_ms": 1000 * max(lat) if lat else float("nan"),
        }
        if "rate" in command:
            result["target_deliveries_per_s"] = command["rate"] * n
        if not drained or closed or received != published * n:
            print(f"  WARNING {label}: {result}", file=sys.stderr)
        print(
            f"  {label:<28} {result['deliveries_per_s']:>10,.0f} deliveries/s"
            f"  server {result['cpu_us_per_delivery']:6.2f} µs/delivery"
            f" (sys {result['sys_us_per_delivery']:.2f})"
            f" ({result['server_cpu_pct']:.0f}% CPU)  clients {result['client_cpu_pct']:.0f}%"
            f"  others {result['others_cpu_pct']:.0f}%"
            f"  p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms"
            + (
                f"  (publish->commit p50 {server_stats['commit_p50_ms']:.1f} ms"
                f" p99 {server_stats['commit_p99_ms']:.1f} ms, {server_stats['commits']} commits,"
                f" {server_stats['frames_per_event']:.2f} frames built per event)"
                if "commits" in server_stats
                else ""
            ),
            flush=True,
        )
        return result

    def max_command(self, n: int) -> dict:
        window = max(10, self.args.inflight // n)
        return {
            "op": "run",
            "mode": "max",
            "duration": self.args.duration,
            "window": window,
            "burst": self.args.burst,
        }

    def run(self) -> dict:
        a = self.args
        self.start_clients()
        out: dict = {"max": {}, "half": {}, "memory": None}
        for n in a.clients:
            # ---- dagd
            port = self.start_server("dagd", f"dagd-{n}")
            assert self.server is not None
            if n == max(a.clients) and not a.skip_memory:
                time.sleep(1.0)
                rss0 = proc_rss_mb(self.server.pid)
                self.connect(port, n)
                time.sleep(2.0)
                rss1 = proc_rss_mb(self.server.pid)
                out["memory"] = {
                    "connections": n,
                    "rss0_mb": rss0,
                    "rss1_mb": rss1,
                    "extra_mb": rss1 - rss0,
                    "kb_per_connection": 1024 * (rss1 - rss0) / n,
                }
                print(
                    f"  memory: daemon RSS {rss0:.1f} MB with 0 connections, {rss1:.1f} MB with"
                    f" {n} idle authenticated connections (+{rss1 - rss0:.1f} MB)",
                    flush=True,
                )
            else:
                self.connect(port, n)
            profiling = n in a.profile
            if profiling:
                self.server.ask({"op": "profile_on"}, 10)
            r = self.scenario(n, self.max_command(n), f"dagd {n} clients, max")
            if profiling:
                prof = self.tmp / f"dagd-{n}.prof"
                self.server.ask({"op": "profile_off", "path": str(prof)}, 30)
                r["profile"] = str(prof)
                print_profile(prof)
            out["max"].setdefault(n, {})["dagd"] = r
            if n in a.half:
                target = a.rate if a.rate else 0.5 * r["deliveries_per_s"]
                rate = target / n
                cmd = {"op": "run", "mode": "rate", "duration": a.duration, "rate": rate}
                if profiling:
                    self.server.ask({"op": "profile_on"}, 10)
                h = self.scenario(n, cmd, f"dagd {n} clients, half rate")
                if profiling:
                    prof = self.tmp / f"dagd-{n}-half.prof"
                    self.server.ask({"op": "profile_off", "path": str(prof)}, 30)
                    h["profile"] = str(prof)
                    print_profile(prof)
                out["half"][n] = h
            self.disconnect()
            self.stop_server()
            if a.no_baseline:
                continue
            # ---- baseline
            port = self.start_server("baseline", f"baseline-{n}")
            self.connect(port, n)
            r = self.scenario(n, self.max_command(n), f"baseline {n} clients, max")
            out["max"][n]["baseline"] = r
            self.disconnect()
            self.stop_server()
        return out

    def close(self) -> None:
        self.stop_server()
        for c in self.clients:
            c.stop()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def print_profile(path: Path) -> None:
    stats = pstats.Stats(str(path))
    print(f"\n  cProfile of the daemon's trio thread ({path}), top 25 by own time:")
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


def report(out: dict, args: argparse.Namespace) -> bool:
    ok = True
    print()
    print(
        "| clients | dagd deliveries/s | baseline deliveries/s | ratio | dagd CPU µs/delivery "
        "| baseline CPU µs/delivery | dagd p50 / p99 ms | baseline p50 / p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, pair in out["max"].items():
        if "baseline" not in pair:
            continue
        d, b = pair["dagd"], pair["baseline"]
        ratio = d["deliveries_per_s"] / b["deliveries_per_s"]
        pair["ratio"] = ratio
        ok &= ratio >= RATIO_MIN
        print(
            f"| {n} | {d['deliveries_per_s']:,.0f} | {b['deliveries_per_s']:,.0f} | {ratio:.1f}x "
            f"| {d['cpu_us_per_delivery']:.2f} | {b['cpu_us_per_delivery']:.2f} "
            f"| {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} |"
        )
    print()
    if out["half"]:
        print(
            "| clients | target deliveries/s | achieved | dagd CPU µs/delivery "
            "| p50 ms | p99 ms | max ms |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, r in out["half"].items():
            ok &= r["p99_ms"] < P99_MAX_MS
            print(
                f"| {n} | {r['target_deliveries_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} "
                f"| {r['cpu_us_per_delivery']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['max_ms']:.1f} |"
            )
        print()
    m = out["memory"]
    if m:
        ok &= m["extra_mb"] < MEM_MAX_MB
        print(
            f"memory: {m['rss0_mb']:.1f} MB -> {m['rss1_mb']:.1f} MB with {m['connections']} idle"
            f" connections: +{m['extra_mb']:.1f} MB ({m['kb_per_connection']:.0f} KB each)"
        )
    print()
    for n, pair in out["max"].items():
        if "ratio" not in pair:
            continue
        verdict = "met" if pair["ratio"] >= RATIO_MIN else "NOT met"
        print(f"requirement ratio >= {RATIO_MIN} at {n} clients: {verdict} ({pair['ratio']:.1f}x)")
    for n, r in out["half"].items():
        verdict = "met" if r["p99_ms"] < P99_MAX_MS else "NOT met"
        print(f"requirement p99 < {P99_MAX_MS:g} ms at half rate, {n} clients: {verdict}")
    if m:
        verdict = "met" if m["extra_mb"] < MEM_MAX_MB else "NOT met"
        print(f"requirement < {MEM_MAX_MB:g} MB for {m['connections']} idle connections: {verdict}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "dagd", "baseline", "client"], default="bench")
    parser.add_argument("--shm", help=argparse.SUPPRESS)
    parser.add_argument("--slot", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nprocs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument(
        "--clients", default="10,100,1000", help="client counts (default: %(default)s)"
    )
    parser.add_argument("--half", default="100,1000", help="counts for the half-rate p99 run")
    parser.add_argument("--procs", type=int, default=2, help="client processes (default: 2)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument(
        "--inflight",
        type=int,
        default=20_000,
        help="max-rate window: deliveries in flight over all clients (default: %(default)s)",
    )
    parser.add_argument("--burst", type=int, default=500, help="max events per 2 ms burst")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="deliveries/s of the fixed-rate run instead of half the measured maximum (A/B runs)",
    )
    parser.add_argument("--quick", action="store_true", help="2 s per scenario")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="dagd runs only")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each scenario, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--profile", default="", help="client counts whose dagd run is profiled")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.role == "dagd":
        return dagd_server_main(args)
    if args.role == "baseline":
        return baseline_server_main(args)
    if args.role == "client":
        return client_main(args)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    args.clients, args.half, args.profile = ints(args.clients), ints(args.half), ints(args.profile)
    if args.quick:
        args.duration = 2.0
    raise_nofile()
    print(
        f"WebSocket fan-out: {os.cpu_count()} CPUs, Python {sys.version.split()[0]},"
        f" {args.procs} client processes, {args.duration:g} s per scenario",
        flush=True,
    )
    t0 = time.time()
    bench = Bench(args)
    try:
        out = bench.run()
    finally:
        bench.close()
    ok = report(out, args)
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
