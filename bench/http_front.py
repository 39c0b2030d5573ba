"""Plain HTTP through dagd's front door against a bare h11 server on trio, over loopback.

    python bench/http_front.py                      # 3 rounds x 3 s per route and server
    python bench/http_front.py --quick              # 2 rounds x 1.5 s
    python bench/http_front.py --before /tmp/old    # also: WebSocket handshakes/s, this tree
                                                    # vs the dagd tree at /tmp/old

Exit status 0 when dagd's keep-alive request rate is at least 0.5 of the bare server's for
every route.

Servers (each in its own process, one at a time, alternating, rounds interleaved so a busy
machine disturbs both alike):
- dagd: a real daemon (`open_app(config, websocket=True)`) with a few finished runs. Routes
  measured: `/healthz` if this dagd has it, else `/bench/health` (a small JSON answer the
  benchmark registers in the daemon's route table); `/api/v1/runs?limit=20` with a bearer
  token (20 runs of JSON, ~10 kB) and `/bench/runs`, which answers those very bytes from
  memory, so the front door's own cost shows without the store's.
- bare: a trio server that reads each request with h11 and answers, with h11, the exact
  status, headers and body dagd gave for that route (captured once before the rounds): the
  same bytes on the wire, with none of the front door's work (routing, limits, Host check,
  header assembly, the request object).

The client: `--procs` processes, each holding `--conns` keep-alive connections and sending
one request per connection at a time (no pipelining), reading each response to its known
length. Reported per route: requests/s of each server, dagd/bare, and server CPU per request
(utime+stime of the server process over the round, /proc/PID/stat), which a shared machine
disturbs less than the rate.

`--before`: WebSocket handshakes per second (TCP connect, upgrade, 101, close) against a
daemon from this tree and one from the other, alternating rounds: the front door reads every
connection's first request before trio-websocket does, and this shows what that costs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
RUNS = 20
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- servers


def dagd_server_main(args: argparse.Namespace) -> None:
    import logging

    import trio

    from dagd.app import open_app
    from dagd.core.config import parse_config

    logging.basicConfig(level=logging.WARNING)
    base = Path(args.base)
    (base / "dags").mkdir(parents=True, exist_ok=True)
    (base / "dags" / "bench.toml").write_text(
        'id = "bench"\n[steps.a]\ncommand = "true"\n[steps.b]\ncommand = "true"\n'
        'depends_on = ["a"]\n'
    )
    config = parse_config(
        f"""
dags_dir = {json.dumps(str(base / "dags"))}
state_dir = {json.dumps(str(base / "state"))}
[server]
host = "{HOST}"
port = 0
heartbeat_interval = "1h"
max_connections = 2000
[[auth.tokens]]
token = "{TOKEN}"
role = "read"
""",
        base,
    )

    async def main() -> None:
        async with open_app(config, websocket=True) as app:
            server = app.server
            assert server is not None
            await add_bench_routes(app)
            reply({"port": server.port, "pid": os.getpid()})
            await trio.sleep_forever()

    trio.run(main)


async def add_bench_routes(app: Any) -> None:
    """Finished runs for /api/v1/runs, and the benchmark's own routes beside dagd's (only
    when this dagd has a front door: the --before tree may not)."""
    import trio

    daemon, server = app.daemon, app.server
    if not hasattr(server, "door"):
        return
    from collections.abc import Mapping

    from dagd.net.http.message import HttpRequest, HttpResponse, Route, json_response
    from dagd.net.http.router import Router
    from dagd.net.http.routes import all_routes

    run_ids = [await daemon.trigger("bench") for _ in range(RUNS)]
    with trio.fail_after(60):
        while True:
            records = await daemon.list_runs("bench", limit=RUNS)
            if len(records) == RUNS and all(r.status == "success" for r in records):
                break
            await trio.sleep(0.05)
    assert len(run_ids) == RUNS
    await daemon.store.flush()
    started = time.monotonic()
    runs_body: list[bytes] = [b""]

    async def health(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        return json_response(
            200, {"status": "ok", "version": "0.1.0", "uptime": time.monotonic() - started}
        )

    async def runs(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        return HttpResponse(200, runs_body[0], "application/json")

    routes = all_routes(server.http)
    server.door.router = Router(
        [
            Route(frozenset({"GET"}), "/bench/health", health),
            Route(frozenset({"GET"}), "/bench/runs", runs),
            *routes,
        ]
    )
    # /bench/runs answers the JSON API's own bytes for the same question.
    found = server.door.router.match("GET", ("api", "v1", "runs"))
    request = HttpRequest(
        "GET",
        "/api/v1/runs",
        {"limit": [str(RUNS)]},
        {"authorization": f"Bearer {TOKEN}", "host": HOST},
        peer=f"{HOST}:1",
    )
    answer = await found.handler(request, found.params)
    assert answer.status == 200, answer
    runs_body[0] = answer.body


def bare_server_main(args: argparse.Namespace) -> None:
    """Answers every request with the captured response for its target (h11 both ways)."""
    import h11
    import trio

    captured = json.loads(Path(args.responses).read_text())
    responses = {
        target: (
            r["status"],
            [(k.encode(), v.encode()) for k, v in r["headers"]],
            base64.b64decode(r["body"]),
        )
        for target, r in captured.items()
    }

    async def serve(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    status, headers, body = responses[event.target.decode()]
                    continue
                if isinstance(event, h11.EndOfMessage):
                    response = h11.Response(status_code=status, headers=headers, reason=b"OK")
                    out = conn.send(response)
                    out += conn.send(h11.Data(data=body))
                    out += conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        port = listeners[0].socket.getsockname()[1]
        reply({"port": port, "pid": os.getpid()})
        await trio.serve_listeners(serve, listeners)

    trio.run(main)


# ------------------------------------------------------------------------------ client


def fetch(port: int, target: str, headers: dict[str, str]) -> tuple[int, list, bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    import h11

    client = h11.Connection(h11.CLIENT)
    with socket.create_connection((HOST, port), timeout=10) as sock:
        head = [("host", f"{HOST}:{port}"), *headers.items(), ("connection", "close")]
        sock.sendall(client.send(h11.Request(method="GET", target=target, headers=head)))
        sock.sendall(client.send(h11.EndOfMessage()))
        status, got, body = 0, [], b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = [(k.decode(), v.decode()) for k, v in event.headers.raw_items()]
            elif isinstance(event, h11.Data):
                body += event.data
            else:
                return status, got, body


def client_main(args: argparse.Namespace) -> None:
    """Keep-alive load for args.duration seconds; prints the number of responses."""
    request = (
        f"GET {args.target} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(args.conns):
        sock = socket.create_connection((HOST, args.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conns.append(sock)
        sel.register(sock, selectors.EVENT_READ, bytearray())
    start_at = args.start_at
    while time.time() < start_at:
        time.sleep(0.001)
    for sock in conns:
        sock.send(request)
    done = 0
    end = start_at + args.duration
    while time.time() < end:
        for key, _ in sel.select(timeout=0.1):
            buf = key.data
            chunk = key.fileobj.recv(262144)
            if not chunk:
                raise SystemExit("the server closed a connection")
            buf += chunk
            while (blank := buf.find(b"\r\n\r\n")) >= 0:
                found = LENGTH.search(buf, 0, blank)
                if found is None or not buf.startswith(b"HTTP/1.1 200 "):
                    raise SystemExit(f"unexpected response: {bytes(buf[:200])!r}")
                total = blank + 4 + int(found[1])
                if len(buf) < total:
                    break
                del buf[:total]
                done += 1
                if not buf:
                    key.fileobj.send(request)
    reply({"done": done})


def ws_client_main(args: argparse.Namespace) -> None:
    """WebSocket handshakes (connect, upgrade, 101, close) for args.duration seconds."""
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /api/v1/ws HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    start_at = args.start_at
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    end = start_at + args.duration
    while time.time() < end:
        with socket.create_connection((HOST, args.port)) as sock:
            sock.sendall(upgrade)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"closed before the handshake's end: {got!r}")
                got += chunk
            if not got.startswith(b"HTTP/1.1 101 "):
                raise SystemExit(f"not accepted: {got[:100]!r}")
            done += 1
    reply({"done": done})


# ---------------------------------------------------------------------------- the run


class Server:
    def __init__(self, role: str, tree: str | None, base: str, extra: list[str]) -> None:
        env = dict(os.environ)
        if tree is not None:
            env["PYTHONPATH"] = tree
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", role, "--base", base, *extra],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {role} server did not start")
        info = json.loads(line)
        self.port: int = info["port"]
        self.pid: int = info["pid"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def load(port: int, target: str, args: argparse.Namespace, role: str = "client") -> int:
    """Run the client processes against `port`; the responses they counted."""
    start_at = time.time() + 0.3
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", role, "--port", str(port),
             "--target", target, "--conns", str(args.conns),
             "--duration", str(args.duration), "--start-at", str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.procs)
    ]  # fmt: skip
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=args.duration + 60)
        if proc.returncode:
            raise SystemExit(f"client failed ({proc.returncode}): {out}")
        total += json.loads(out)["done"]
    return total


def measure(server: Server, target: str, args: argparse.Namespace) -> tuple[float, float]:
    """(requests/s, server CPU microseconds per request) of one round."""
    cpu = cpu_seconds(server.pid)
    count = load(server.port, target, args)
    used = cpu_seconds(server.pid) - cpu
    return count / args.duration, 1e6 * used / max(1, count)


def http_part(args: argparse.Namespace, base: Path) -> bool:
    dagd = Server("dagd", None, str(base / "dagd"), [])
    try:
        auth = {"authorization": f"Bearer {TOKEN}"}
        health = "/healthz" if fetch(dagd.port, "/healthz", {})[0] == 200 else "/bench/health"
        targets = [health, "/api/v1/runs?limit=20", "/bench/runs"]
        captured = {}
        for target in targets:
            status, headers, body = fetch(dagd.port, target, auth)
            assert status == 200, (target, status, body[:200])
            headers = [(k, v) for k, v in headers if k.lower() != "connection"]
            captured[target] = {
                "status": status,
                "headers": headers,
                "body": base64.b64encode(body).decode(),
            }
            print(f"{target}: {len(body)} body bytes, {len(headers)} headers")
        responses = base / "responses.json"
        responses.write_text(json.dumps(captured))
        bare = Server("bare", None, str(base / "bare"), ["--responses", str(responses)])
        try:
            # The bare server's h11 writes the same bytes: check, then measure.
            for target in targets:
                assert fetch(bare.port, target, auth)[2] == base64.b64decode(
                    captured[target]["body"]
                )
            results: dict[str, dict[str, list[tuple[float, float]]]] = {
                t: {"dagd": [], "bare": []} for t in targets
            }
            for round_ in range(args.rounds):
                for target in targets:
                    order = [("dagd", dagd), ("bare", bare)]
                    if round_ % 2:
                        order.reverse()
                    for name, server in order:
                        results[target][name].append(measure(server, target, args))
        finally:
            bare.close()
    finally:
        dagd.close()
    ok = True
    print(
        f"\n{'route':<24} {'dagd req/s':>11} {'bare req/s':>11} {'ratio':>6} "
        f"{'dagd CPU/req':>13} {'bare CPU/req':>13} {'CPU ratio':>9}"
    )
    for target in targets:
        d_rate = statistics.median(r for r, _ in results[target]["dagd"])
        b_rate = statistics.median(r for r, _ in results[target]["bare"])
        d_cpu = statistics.median(c for _, c in results[target]["dagd"])
        b_cpu = statistics.median(c for _, c in results[target]["bare"])
        ratio = d_rate / b_rate
        ok = ok and ratio >= 0.5
        print(
            f"{target:<24} {d_rate:>11,.0f} {b_rate:>11,.0f} {ratio:>6.2f} "
            f"{d_cpu:>10.0f} us {b_cpu:>10.0f} us {b_cpu / d_cpu:>9.2f}"
        )
    print("(ratio: dagd/bare requests per second, median of the rounds; requirement >= 0.5)")
    return ok


def ws_part(args: argparse.Namespace, base: Path) -> None:
    here = args.after or str(Path(__file__).resolve().parents[1])
    servers = {
        f"{here}": Server("dagd", here, str(base / "ws-now"), []),
        f"{args.before}": Server("dagd", args.before, str(base / "ws-before"), []),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpus: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for round_ in range(args.rounds):
            names = list(servers)
            if round_ % 2:
                names.reverse()
            for name in names:
                server = servers[name]
                cpu = cpu_seconds(server.pid)
                count = load(server.port, "/api/v1/ws", args, role="ws-client")
                rates[name].append(count / args.duration)
                cpus[name].append(1e6 * (cpu_seconds(server.pid) - cpu) / max(1, count))
    finally:
        for server in servers.values():
            server.close()
    print(f"\n{'WebSocket handshakes':<36} {'per s':>8} {'server CPU each':>16}")
    for name in servers:
        print(
            f"{name:<36} {statistics.median(rates[name]):>8,.0f} "
            f"{statistics.median(cpus[name]):>13.0f} us   (rounds: "
            + ", ".join(f"{r:,.0f}" for r in rates[name])
            + ")"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=["bench", "dagd", "bare", "client", "ws-client"], default="bench"
    )
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--responses", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1.5 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--conns", type=int, default=4, help="connections per client process")
    parser.add_argument("--before", help="another dagd tree: compare WebSocket handshakes/s")
    parser.add_argument("--after", help="the tree to compare with --before (default: this one)")
    parser.add_argument("--ws-only", action="store_true", help="only the WebSocket comparison")
    args = parser.parse_args()
    if args.role == "dagd":
        return dagd_server_main(args)
    if args.role == "bare":
        return bare_server_main(args)
    if args.role == "client":
        return client_main(args)
    if args.role == "ws-client":
        return ws_client_main(args)
    if args.quick:
        args.rounds, args.duration = 2, 1.5
    with tempfile.TemporaryDirectory(prefix="dagd-http-bench-") as tmp:
        ok = args.ws_only or http_part(args, Path(tmp))
        if args.before:
            ws_part(args, Path(tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
