"""Helpers for the WebSocket server tests: a daemon on 127.0.0.1 port 0 with a real SQLite
store in tmp_path, the trio-websocket client, and the independent asyncio `websockets` client
driven from trio through a private event loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import subprocess
import threading
import time
import weakref
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as aio_connect
from websockets.exceptions import ConnectionClosed as AioConnectionClosed
from websockets.exceptions import InvalidStatus

from dagd.app import App, open_app
from dagd.core.config import Config, parse_config
from dagd.core.events import ErrorEvent
from dagd.daemon.daemon import Daemon
from dagd.net.auth import AuthThrottle
from dagd.net.server import Server

OP_TOKEN = "operate-secret-token"
READ_TOKEN = "read-secret-token"
TOKENS = f"""
[[auth.tokens]]
name = "ops"
role = "operate"
token = "{OP_TOKEN}"

[[auth.tokens]]
name = "viewer"
role = "read"
token = "{READ_TOKEN}"
"""

#: Every `type` a server frame may carry.
SERVER_TYPES = {
    "auth_success",
    "subscribed",
    "unsubscribed",
    "replay_complete",
    "snapshot_complete",
    "triggered",
    "cancel_accepted",
    "retry_accepted",
    "dags",
    "pools",
    "runs",
    "run",
    "dag",
    "paused",
    "unpaused",
    "backfill_result",
    "log_following",
    "log_unfollowed",
    "log_chunk",
    "log_end",
    "pong",
    "heartbeat",
    "error",
    "dag_run_status",
    "step_status",
    "dag_run_progress",
    "dag_status",
}
EVENT_TYPES = {"dag_run_status", "step_status", "dag_run_progress", "dag_status"}
ERROR_CODES = {
    "auth_required",
    "auth_failed",
    "auth_timeout",
    "invalid_message",
    "unknown_type",
    "forbidden",
    "rate_limited",
    "replay_unavailable",
    "replay_ahead",
    "unknown_dag",
    "invalid_params",
    "unknown_run",
    "unknown_step",
    "unknown_attempt",
    "log_unreadable",
    "too_many_follows",
    "not_running",
    "not_finished",
    "not_retryable",
    "shutting_down",
    "storage_unavailable",
    "no_schedule",
    "invalid_range",
    "duplicate_run",
}

DAGS = {
    "alpha": """
description = "two quick python steps"
tags = ["test", "quick"]
[steps.one]
call = "stepfuncs:noop"
[steps.two]
call = "stepfuncs:noop"
depends_on = ["one"]
""",
    "beta": """
[steps.only]
call = "stepfuncs:noop"
""",
    "slow": """
[steps.wait]
command = "sleep 30"
""",
    "failing": """
[steps.boom]
call = "stepfuncs:always_fail"
""",
    "withparams": """
[params]
date = "2024-01-01"
[steps.echo]
command = "echo $DATE"
""",
}


def make_config(
    tmp_path: Path,
    *,
    server: str = "",
    top: str = "",
    tokens: str | None = TOKENS,
    dags: dict[str, str] | None = None,
) -> Config:
    """Write the DAG files and parse a config: port 0, heartbeats off unless asked for."""
    dags_dir = tmp_path / "dags"
    dags_dir.mkdir(exist_ok=True)
    for name, text in (DAGS if dags is None else dags).items():
        (dags_dir / f"{name}.toml").write_text(text)

    def merged(defaults: dict[str, str], extra: str) -> str:
        for line in extra.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                defaults[key.strip()] = value.strip()
        return "\n".join(f"{k} = {v}" for k, v in defaults.items())

    top_text = merged(
        {"progress_interval": "0", "kill_grace": '"300ms"', "reload_interval": '"1h"'}, top
    )
    server_text = merged(
        {
            "port": "0",
            "heartbeat_interval": '"1h"',
            "handshake_timeout": "3",
            "send_timeout": "5",
        },
        server,
    )
    text = f"""
{top_text}

[server]
{server_text}

{tokens or ""}
"""
    return parse_config(text, tmp_path)


#: For the TLS tests, which make their certificate with the openssl command.
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command"
)


def self_signed_cert(folder: Path) -> None:
    """folder/cert.pem and folder/key.pem: a one-day self-signed certificate for 127.0.0.1."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip


#: The served daemons' apps, so that tests holding only a daemon reach its server.
_APPS: weakref.WeakKeyDictionary[Daemon, App] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def running(tmp_path: Path, **kw: Any) -> AsyncIterator[Daemon]:
    config = kw.pop("config", None) or make_config(tmp_path, **kw)
    async with open_app(config, websocket=True) as app:
        _APPS[app.daemon] = app
        yield app.daemon


def remember(app: App) -> Daemon:
    """Register an app started elsewhere (open_app) for server_of / url_of; returns its daemon."""
    _APPS[app.daemon] = app
    return app.daemon


def server_of(daemon: Daemon) -> Server:
    app = _APPS.get(daemon)
    if app is None or app.server is None:
        raise AssertionError("the daemon has no WebSocket server")
    return app.server


def url_of(daemon: Daemon, path: str = "/api/v1/ws") -> str:
    url = server_of(daemon).url
    assert url is not None
    return url.replace("/api/v1/ws", path)


def publish_errors(daemon: Daemon, dag_id: str, count: int, text: str = "boom") -> list[int]:
    """Publish `count` DAG error events for `dag_id`; returns their seqs."""
    now = time.time()
    return [
        daemon.publish(ErrorEvent(dag_id, None, None, f"{text} {i}", now)).seq for i in range(count)
    ]


async def publish_committed(
    daemon: Daemon, dag_id: str, count: int, text: str = "boom"
) -> list[int]:
    seqs = publish_errors(daemon, dag_id, count, text)
    await daemon.store.flush()
    return seqs


def stored_seqs(daemon: Daemon, dag_ids: set[str] | None = None, since: int = 0) -> list[int]:
    rows = daemon.store._read("SELECT seq, dag_id FROM events WHERE seq > ? ORDER BY seq", (since,))
    return [seq for seq, dag in rows if dag_ids is None or dag in dag_ids]


def check_frame(text: str | bytes) -> dict[str, Any]:
    """A server frame: a JSON text object with a known type (and a known code for errors)."""
    assert isinstance(text, str), f"binary frame from the server: {text!r}"
    message = json.loads(text)
    assert isinstance(message, dict)
    assert message.get("type") in SERVER_TYPES, message
    if message["type"] == "error" and "data" not in message:
        assert message["code"] in ERROR_CODES, message
        assert isinstance(message["message"], str)
        assert message["timestamp"].endswith("Z")
    return message


# ------------------------------------------------------------- trio-websocket


async def trecv(ws: WebSocketConnection, timeout: float = 5.0) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return check_frame(await ws.get_message())


async def trequest(
    ws: WebSocketConnection, message: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """Send a request and return the next frame that is not an event or heartbeat."""
    await ws.send_message(json.dumps(message))
    with trio.fail_after(timeout):
        while True:
            answer = await trecv(ws)
            if answer["type"] not in EVENT_TYPES | {"heartbeat"} and "data" not in answer:
                return answer


@asynccontextmanager
async def tws(
    url: str, token: str | None = OP_TOKEN, **kw: Any
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket connection, authenticated with `token` unless it is None."""
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("disconnect_timeout", 2)
    kw.setdefault("message_queue_size", 4096)
    async with open_websocket_url(url, **kw) as ws:
        if token is not None:
            await ws.send_message(json.dumps({"type": "auth", "token": token}))
            answer = await trecv(ws)
            assert answer["type"] == "auth_success", answer
        yield ws


async def tclosed(ws: WebSocketConnection, timeout: float = 5.0) -> tuple[int, list[dict]]:
    """Read until the server closes; returns (close code, frames received before)."""
    frames = []
    with trio.fail_after(timeout):
        try:
            while True:
                frames.append(check_frame(await ws.get_message()))
        except ConnectionClosed as exc:
            return exc.reason.code, frames


# ------------------------------------------------------- the asyncio client


class Aio:
    """A private asyncio loop in a thread; `await aio.run(coro)` runs a coroutine on it from
    trio (without blocking the trio loop that serves the daemon)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connections: list[AioWS] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def wait(self, fut: concurrent.futures.Future[Any], timeout: float = 10.0) -> Any:
        try:
            with trio.fail_after(timeout):
                return await trio.to_thread.run_sync(fut.result, abandon_on_cancel=True)
        except BaseException:
            fut.cancel()
            raise

    async def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return await self.wait(self.spawn(coro), timeout)

    async def connect(self, url: str, token: str | None = OP_TOKEN, **kw: Any) -> AioWS:
        kw.setdefault("open_timeout", 5)
        kw.setdefault("close_timeout", 2)
        kw.setdefault("ping_interval", None)
        kw.setdefault("proxy", None)

        async def open_connection() -> ClientConnection:
            return await aio_connect(url, **kw)

        conn = await self.run(open_connection())
        ws = AioWS(self, conn)
        self.connections.append(ws)
        if token is not None:
            await ws.send({"type": "auth", "token": token})
            answer = await ws.recv()
            assert answer["type"] == "auth_success", answer
        return ws

    def close(self) -> None:
        async def shutdown() -> None:
            for ws in self.connections:
                await ws.conn.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AioWS:
    """One `websockets` (asyncio) client connection, used from trio."""

    def __init__(self, aio: Aio, conn: ClientConnection) -> None:
        self.aio = aio
        self.conn = conn
        self.held: list[dict[str, Any]] = []  # events that arrived while awaiting an answer

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.aio.run(self.conn.send(message))

    async def recv_raw(self, timeout: float = 5.0) -> str | bytes:
        return await self.aio.run(asyncio.wait_for(self.conn.recv(), timeout), timeout + 1)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.held:
            return self.held.pop(0)
        return check_frame(await self.recv_raw(timeout))

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request; the next frame that is not an event or heartbeat (events that come
        first are kept for recv())."""
        await self.send(message)
        with trio.fail_after(timeout):
            while True:
                answer = check_frame(await self.recv_raw(timeout))
                if answer["type"] not in EVENT_TYPES | {"heartbeat"} and "data" not in answer:
                    return answer
                if "data" in answer:
                    self.held.append(answer)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str, list[dict]]:
        """Read until the server closes: (close code received, reason, frames before)."""

        async def drain() -> tuple[int | None, str, list[dict]]:
            frames = self.held
            self.held = []
            try:
                while True:
                    frames.append(check_frame(await self.conn.recv()))
            except AioConnectionClosed as exc:
                rcvd = exc.rcvd
                return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), frames

        return await self.aio.run(asyncio.wait_for(drain(), timeout), timeout + 1)

    async def close(self) -> None:
        await self.aio.run(self.conn.close())


# --------------------------------------------------------------- both clients


class TrioWS:
    """A trio-websocket client connection with the same interface as AioWS."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.held: list[dict[str, Any]] = []  # events that arrived while awaiting an answer

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.ws.send_message(message)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.held:
            return self.held.pop(0)
        return await trecv(self.ws, timeout)

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request; the next frame that is not an event or heartbeat (events that come
        first are kept for recv())."""
        await self.send(message)
        with trio.fail_after(timeout):
            while True:
                answer = await trecv(self.ws, timeout)
                if answer["type"] not in EVENT_TYPES | {"heartbeat"} and "data" not in answer:
                    return answer
                if "data" in answer:
                    self.held.append(answer)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str, list[dict]]:
        frames = self.held
        self.held = []
        with trio.fail_after(timeout):
            try:
                while True:
                    frames.append(check_frame(await self.ws.get_message()))
            except ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason or "", frames

    async def close(self) -> None:
        with trio.move_on_after(3):
            await self.ws.aclose()


Client = TrioWS | AioWS
KINDS = ["trio", "asyncio"]


class Rejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _hold_trio_connection(
    url: str,
    headers: list[tuple[bytes, bytes]] | None,
    *,
    task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A trio-websocket client connection on a stream of our own (trio-websocket leaves the
    socket of a refused handshake open), held open until cancelled; raises Rejected."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    rejected = None
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(5):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.netloc,
                        resource,
                        extra_headers=headers,
                        message_queue_size=4096,
                    )
                task_status.started(ws)
                try:
                    await trio.sleep_forever()  # until the harness ends
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await ws.aclose()
        except* ConnectionRejected as group:
            rejected = group.exceptions[0].status_code  # type: ignore[attr-defined]
    finally:
        await trio.aclose_forcefully(stream)
    if rejected is not None:
        raise Rejected(rejected)


async def trio_client(nursery: trio.Nursery, url: str, token: str | None = OP_TOKEN) -> TrioWS:
    """A trio-websocket client living in `nursery` (which must be cancelled to end it)."""
    client = TrioWS(await nursery.start(_hold_trio_connection, url, None))
    if token is not None:
        await client.send({"type": "auth", "token": token})
        assert (await client.recv())["type"] == "auth_success"
    return client


class Harness:
    """A served daemon plus a factory of clients of either kind, closed before the daemon."""

    def __init__(self, daemon: Daemon, aio: Aio, nursery: trio.Nursery) -> None:
        self.daemon = daemon
        self.url = url_of(daemon)
        self.aio = aio
        self.nursery = nursery
        self.clients: list[Client] = []

    @property
    def server(self) -> Server:
        return server_of(self.daemon)

    async def connect(
        self,
        kind: str = "trio",
        token: str | None = OP_TOKEN,
        *,
        path: str = "/api/v1/ws",
        origin: str | None = None,
        **kw: Any,
    ) -> Client:
        """Connect (and authenticate unless token is None). A refused handshake raises
        Rejected(status)."""
        url = url_of(self.daemon, path)
        client: Client
        if kind == "trio":
            headers = [(b"Origin", origin.encode())] if origin is not None else None
            try:
                ws = await self.nursery.start(_hold_trio_connection, url, headers)
            except* Rejected as group:
                raise group.exceptions[0] from None
            client = TrioWS(ws)
        else:
            try:
                client = await self.aio.connect(url, token=None, origin=origin, **kw)
            except InvalidStatus as exc:
                raise Rejected(exc.response.status_code) from None
        self.clients.append(client)
        if token is not None:
            await client.send({"type": "auth", "token": token})
            answer = await client.recv()
            assert answer["type"] == "auth_success", answer
        return client

    async def status(self, kind: str, **kw: Any) -> int:
        """The HTTP status of a handshake: 101 if accepted (the connection is then closed)."""
        try:
            client = await self.connect(kind, token=None, **kw)
        except Rejected as exc:
            return exc.status
        await client.close()
        return 101

    def forgive(self) -> None:
        """Forget earlier auth failures (they slow down the next attempts from 127.0.0.1)."""
        self.server.throttle = AuthThrottle()

    async def run_status(self, run_id: str, *statuses: str, timeout: float = 10.0) -> str:
        """Poll the store until the run has one of `statuses`."""
        with trio.fail_after(timeout):
            while True:
                found = await self.daemon.store.get_run(run_id)
                if found is not None and found[0].status in statuses:
                    return found[0].status
                await trio.sleep(0.01)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


@asynccontextmanager
async def harness(tmp_path: Path, aio: Aio, **kw: Any) -> AsyncIterator[Harness]:
    async with running(tmp_path, **kw) as daemon, trio.open_nursery() as nursery:
        h = Harness(daemon, aio, nursery)
        try:
            yield h
        finally:
            await h.aclose()
            nursery.cancel_scope.cancel()


def events_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "seq" in f and "data" in f]
