"""Hostile clients: hypothesis throws random frames at the server, before and after auth.

The daemon runs in a background thread (its own trio loop) for the whole module, and the
independent `websockets` sync client talks to it, so hypothesis drives plain functions and
one authenticated connection is reused across examples. After every example: every frame the
server sent is JSON with a known type, a normal request is still answered, and no connection
was closed with 1011 (internal error).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from wshelp import OP_TOKEN, check_frame, make_config, remember, server_of, url_of

from dagd.app import open_app
from dagd.core.protocol.requests import CLIENT_MESSAGES
from dagd.daemon.daemon import Daemon


class NoThrottle:
    """The fuzzer fails auth on purpose, many times: do not slow it down."""

    def delay(self, peer: str) -> float:
        return 0.0

    def failed(self, peer: str) -> None:
        pass

    def succeeded(self, peer: str) -> None:
        pass


class ThreadedDaemon:
    """open_app(websocket=True) in its own thread and trio loop."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.daemon: Daemon | None = None
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def _thread(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by the tests
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        async with open_app(self.config, websocket=True) as app:
            daemon = self.daemon = remember(app)
            self.token = trio.lowlevel.current_trio_token()
            self.stop_event = trio.Event()
            server_of(daemon).throttle = NoThrottle()
            self.ready.set()
            await self.stop_event.wait()

    def __enter__(self) -> ThreadedDaemon:
        self.thread.start()
        assert self.ready.wait(15), "the daemon did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            trio.from_thread.run_sync(self.stop_event.set, trio_token=self.token)
        self.thread.join(15)
        assert not self.thread.is_alive()

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return url_of(self.daemon)

    def alive(self) -> None:
        assert self.thread.is_alive() and self.error is None, self.error


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # No WebSocket pings either way: both libraries draw ping payloads from the global
    # `random`, from other threads, which hypothesis reports as randomness in a strategy.
    config = make_config(tmp, server='rate_limit = 1000000\nauth_timeout = 5\nping_interval = "1h"')
    with ThreadedDaemon(config) as served:
        yield served


def open_client(url: str, token: str | None = OP_TOKEN) -> ClientConnection:
    ws = connect(
        url,
        open_timeout=5,
        close_timeout=2,
        proxy=None,
        max_size=None,
        legacy=True,
        ping_interval=None,
    )
    if token is not None:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert check_frame(ws.recv(timeout=5))["type"] == "auth_success"
    return ws


# ---------------------------------------------------------------- strategies

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # with surrogates
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["type", "requestId", "token", "dagIds", "since", "dagId", "params", "runId", "limit"]
typed_message = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from([*CLIENT_MESSAGES, "", "PING", "heartbeat", "error", "dag_run_status"]),
    st.dictionaries(st.sampled_from(FIELDS) | any_text, json_value, max_size=4),
)
plausible_message = st.builds(  # right field names, random values: deeper into the parser
    lambda kind, values: {
        "type": kind,
        **{f: v for f, v in zip(FIELDS[1:], values, strict=False) if v is not ...},
    },
    st.sampled_from(list(CLIENT_MESSAGES)),
    st.lists(json_value | st.just(...), min_size=8, max_size=8),
)
HOSTILE = [
    '{"type": "replay", "since": NaN}',
    '{"type": "replay", "since": -Infinity}',
    '{"type": "replay", "since": 1e999999}',
    '{"type": "replay", "since": 99999999999999999999999999999}',
    '{"type": "list_runs", "limit": 1e2}',
    '{"type": "ping", "requestId": "\\ud800"}',
    '{"type": "subscribe", "dagIds": ["\\udfff", "ok"]}',
    '{"type": "trigger", "dagId": "alpha", "params": {"\\ud83d": "x"}}',
    '{"type": "ping", "type": "auth", "token": "x"}',
    '{"type": "ping"}{"type": "ping"}',
    '{"type": "ping"} ',
    '\ufeff{"type": "ping"}',
    '{"type": "ping", "requestId": 1' + "0" * 5000 + "}",
    "[" * 30000 + "]" * 30000,
    '{"a":' * 10000 + "1" + "}" * 10000,
    "\x00",
    "",
]


def encode(value: Any, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii)


frames = st.one_of(
    st.tuples(st.just("text"), json_value.map(lambda v: encode(v, True))),
    st.tuples(st.just("text"), typed_message.map(lambda v: encode(v, True))),
    st.tuples(st.just("text"), plausible_message.map(lambda v: encode(v, True))),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("text"), st.sampled_from(HOSTILE)),
    st.tuples(
        st.just("text"), st.integers(1, 30_000).map(lambda n: "[" * n + "]" * n)
    ),  # deep nesting
    st.tuples(st.just("binary"), st.binary(max_size=200)),
    st.tuples(st.just("binary"), typed_message.map(lambda v: encode(v, True).encode())),
    # text frames that are not valid UTF-8 (lone surrogates, raw bytes)
    st.tuples(
        st.just("raw"),
        typed_message.map(lambda v: encode(v, False).encode("utf-8", "surrogatepass")),
    ),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=50)),
)


def send(ws: ClientConnection, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    if kind == "text":
        ws.send(payload)
    elif kind == "binary":
        ws.send(payload, text=False)
    else:
        ws.send(payload, text=True)  # bytes as a text frame: no UTF-8 check on our side


def valid_utf8(frame: tuple[str, Any]) -> bool:
    kind, payload = frame
    if kind != "raw":
        return True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ids = itertools.count()


def ping(ws: ClientConnection) -> None:
    """The server still answers a normal request on this connection."""
    rid = f"probe-{next(ids)}"
    ws.send(json.dumps({"type": "ping", "requestId": rid}))
    while True:
        frame = check_frame(ws.recv(timeout=5))
        if frame.get("requestId") == rid:
            assert frame["type"] == "pong"
            return


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="dagd")
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# --------------------------------------------------------------------- tests


def test_fuzz_before_auth(served: ThreadedDaemon, no_server_errors: None) -> None:
    control = open_client(served.url)
    try:

        @FUZZ
        @given(frame=frames)
        def example(frame: tuple[str, Any]) -> None:
            ws = open_client(served.url, token=None)
            try:
                send(ws, frame)
                received = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        received.append(check_frame(ws.recv(timeout=5)))
            finally:
                ws.close()
            rcvd = closed.value.rcvd
            if not valid_utf8(frame):
                # RFC 6455: fail the connection with 1007 (dagd/net/stream.py); no answer
                assert rcvd is not None and rcvd.code == 1007, rcvd
                assert received == []
                ping(control)
                return
            assert rcvd is not None, "closed without a close frame"
            if rcvd.code == 1009:
                assert received == []
            else:
                assert rcvd.code == 1008
                assert len(received) == 1
                assert received[0]["code"] in ("auth_required", "auth_failed")
            ping(control)
            served.alive()

        example()
    finally:
        control.close()


def test_fuzz_after_auth(served: ThreadedDaemon, no_server_errors: None) -> None:
    state = {"ws": open_client(served.url)}
    control = open_client(served.url)
    try:

        @settings(FUZZ, max_examples=400)
        @given(frame=frames)
        def example(frame: tuple[str, Any]) -> None:
            ws = state["ws"]
            send(ws, frame)
            try:
                ping(ws)
            except ConnectionClosed as exc:
                # Only the WebSocket layer may close: invalid UTF-8 in a text frame, or a
                # message over max_message_size (1009). Never 1011.
                rcvd = exc.rcvd
                if valid_utf8(frame):
                    assert rcvd is not None and rcvd.code == 1009, rcvd
                else:  # see test_fuzz_before_auth
                    assert rcvd is not None and rcvd.code == 1007, rcvd
                ws.close()
                state["ws"] = open_client(served.url)
            else:
                assert valid_utf8(frame), "a text frame with invalid UTF-8 was accepted"
            ping(control)
            served.alive()

        example()
    finally:
        state["ws"].close()
        control.close()


def test_fuzz_left_the_daemon_healthy(served: ThreadedDaemon) -> None:
    ws = open_client(served.url)
    try:
        ws.send(json.dumps({"type": "list_dags", "requestId": 1}))
        answer = check_frame(ws.recv(timeout=5))
        assert answer["type"] == "dags" and answer["requestId"] == 1
        assert served.daemon is not None
        server = server_of(served.daemon)
        deadline = time.monotonic() + 5
        while server.connections != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.connections == 1  # this one: the fuzzers' connections are all gone
    finally:
        ws.close()
    served.alive()
