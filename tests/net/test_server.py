"""The WebSocket endpoint: handshake, authentication, requests and their errors, close codes.

Every test runs a real daemon on 127.0.0.1 port 0 with its SQLite store in tmp_path, and talks
to it over real sockets with trio-websocket and with the independent asyncio `websockets`
library (see wshelp.py). Event streaming, replay, slow consumers and shutdown are in
test_server_stream.py; the fuzz tests in test_server_fuzz.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import open_websocket_url
from wshelp import (
    KINDS,
    OP_TOKEN,
    READ_TOKEN,
    Aio,
    AioWS,
    harness,
    make_config,
    needs_openssl,
    publish_committed,
    running,
    self_signed_cert,
    url_of,
)

from dagd.net.auth import TokenBook


@pytest.fixture
def aio():
    loop = Aio()
    yield loop
    loop.close()


async def wait_run(client, run_id: str, status: str, timeout: float = 10.0) -> list[dict]:
    """Read (events of a subscribed client) until run_id reaches status; returns the frames."""
    frames = []
    with trio.fail_after(timeout):
        while True:
            frame = await client.recv(timeout)
            frames.append(frame)
            data = frame.get("data", {})
            if (
                frame["type"] == "dag_run_status"
                and data["runId"] == run_id
                and data["status"] == status
            ):
                return frames


# ----------------------------------------------------------------- handshake


@pytest.mark.parametrize("kind", KINDS)
async def test_ping_pong_and_request_id(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        pong = await client.request({"type": "ping"})
        assert pong["type"] == "pong"
        assert "requestId" not in pong
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pong["timestamp"])
        assert (await client.request({"type": "ping", "requestId": 7}))["requestId"] == 7
        assert (await client.request({"type": "ping", "requestId": "a-b"}))["requestId"] == "a-b"


@pytest.mark.parametrize("kind", KINDS)
async def test_only_the_endpoint_path_is_served(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        for path in ["/", "/api/v1", "/api/v1/", "/api/v1/wsx", "/api/v1/ws/more", "/API/V1/WS"]:
            assert await h.status(kind, path=path) == 404, path
        assert await h.status(kind) == 101
        assert await h.status(kind, path="/api/v1/ws?client=test") == 101


@pytest.mark.parametrize("kind", KINDS)
async def test_origin_must_match_exactly(tmp_path: Path, aio: Aio, kind: str) -> None:
    server = 'origins = ["http://ok.example", "https://app.example:8443"]'
    async with harness(tmp_path, aio, server=server) as h:
        assert await h.status(kind) == 101  # no Origin: a CLI or script
        assert await h.status(kind, origin="http://ok.example") == 101
        assert await h.status(kind, origin="https://app.example:8443") == 101
        for origin in [
            "http://ok.example.evil",  # a prefix match would let this one in
            "http://evil.ok.example",
            "http://ok.exampl",
            "https://ok.example",
            "http://ok.example:80",
            "http://ok.example/",
            "https://app.example",
            "null",
            "",
        ]:
            assert await h.status(kind, origin=origin) == 403, origin
        # A refused origin never gets to authenticate; an accepted one does.
        client = await h.connect(kind, origin="http://ok.example")
        assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("kind", KINDS)
async def test_any_origin_is_refused_when_none_is_configured(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        assert await h.status(kind, origin="http://localhost:3000") == 403
        assert await h.status(kind) == 101


@pytest.mark.parametrize("kind", KINDS)
async def test_max_connections_answers_503(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, server="max_connections = 2") as h:
        first = await h.connect(kind)
        await h.connect(kind, token=None)  # connections count before they authenticate
        assert await h.status(kind) == 503
        assert await h.status("asyncio" if kind == "trio" else "trio") == 503
        # The others are not disturbed, and a closed connection frees its slot.
        assert (await first.request({"type": "ping"}))["type"] == "pong"
        await first.close()
        with trio.fail_after(5):
            while h.server.connections >= 2:
                await trio.sleep(0.01)
        third = await h.connect(kind)
        assert (await third.request({"type": "ping"}))["type"] == "pong"


async def test_new_connections_get_503_once_the_server_is_closing(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio) as h:
        await h.server.close_all()  # what shutdown calls once the runs have stopped
        for kind in KINDS:
            assert await h.status(kind) == 503


async def test_a_connection_that_never_completes_the_handshake_is_dropped(
    tmp_path: Path, aio: Aio
) -> None:
    async with harness(tmp_path, aio, server="handshake_timeout = 0.5") as h:
        parts = urlsplit(h.url)
        assert parts.hostname is not None and parts.port is not None
        silent = await trio.open_tcp_stream(parts.hostname, parts.port)
        half = await trio.open_tcp_stream(parts.hostname, parts.port)
        try:
            await half.send_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n")  # never ends
            start = trio.current_time()
            with trio.fail_after(5):
                assert await silent.receive_some() == b""
                assert await half.receive_some() == b""
            assert 0.4 < trio.current_time() - start < 3
        finally:
            await silent.aclose()
            await half.aclose()
        # and they never counted as connections
        assert h.server.connections == 0
        assert await h.status("trio") == 101


# ---------------------------------------------------------------------- auth


@pytest.mark.parametrize("kind", KINDS)
async def test_auth_success_reports_role_and_latest_committed_seq(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        seqs = await publish_committed(h.daemon, "alpha", 5)
        for token, role in [(OP_TOKEN, "operate"), (READ_TOKEN, "read")]:
            client = await h.connect(kind, token=None)
            await client.send({"type": "auth", "token": token, "requestId": "r1"})
            answer = await client.recv()
            assert answer == {
                "type": "auth_success",
                "role": role,
                "seq": seqs[-1],
                "requestId": "r1",
            }
            assert answer["seq"] == h.daemon.store.committed_seq


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_token_is_auth_failed_then_1008(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        for token in ["nope", "", OP_TOKEN + " ", OP_TOKEN.upper(), "\u00e9" * 50]:
            h.forgive()
            client = await h.connect(kind, token=None)
            await client.send({"type": "auth", "token": token, "requestId": 42})
            code, _reason, frames = await client.closed(timeout=10)
            assert code == 1008
            assert len(frames) == 1
            assert frames[0]["type"] == "error"
            assert frames[0]["code"] == "auth_failed"
            assert frames[0]["requestId"] == 42
            assert token not in frames[0]["message"] or not token


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "first",
    [
        {"type": "ping"},
        {"type": "subscribe", "dagIds": ["alpha"]},
        {"type": "auth"},  # no token
        {"type": "auth", "token": 123},
        {"type": "auth", "token": OP_TOKEN, "extra": 1},
        {"token": OP_TOKEN},
        "not json",
        "[1, 2, 3]",
        b"\x00\x01binary",
    ],
    ids=repr,
)
async def test_first_message_must_be_auth(
    tmp_path: Path, aio: Aio, kind: str, first: object
) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind, token=None)
        await client.send(first)
        code, _reason, frames = await client.closed()
        assert code == 1008
        assert [(f["type"], f["code"]) for f in frames] == [("error", "auth_required")]


@pytest.mark.parametrize("kind", KINDS)
async def test_auth_timeout(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio, server="auth_timeout = 0.5") as h:
        client = await h.connect(kind, token=None)
        start = trio.current_time()
        code, _reason, frames = await client.closed()
        elapsed = trio.current_time() - start
        assert code == 1008
        assert [(f["type"], f["code"]) for f in frames] == [("error", "auth_timeout")]
        assert 0.4 <= elapsed < 3.0
        # A client that authenticates in time is not affected.
        ok = await h.connect(kind)
        await trio.sleep(0.7)
        assert (await ok.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("kind", KINDS)
async def test_read_role_may_watch_but_not_control(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        operator = await h.connect(kind)
        run_id = (await operator.request({"type": "trigger", "dagId": "beta"}))["runId"]
        reader = await h.connect(kind, token=READ_TOKEN)
        for request, answer in [
            ({"type": "subscribe", "dagIds": ["beta"]}, "subscribed"),
            ({"type": "unsubscribe", "dagIds": ["beta"]}, "unsubscribed"),
            ({"type": "list_dags"}, "dags"),
            ({"type": "list_runs"}, "runs"),
            ({"type": "snapshot"}, "snapshot_complete"),
            ({"type": "replay", "since": 0}, "replay_complete"),
            ({"type": "ping"}, "pong"),
        ]:
            assert (await reader.request(request))["type"] == answer, request
        for request in [
            {"type": "trigger", "dagId": "beta"},
            {"type": "cancel", "runId": run_id},
            {"type": "retry", "runId": run_id},
            {"type": "trigger", "dagId": "no-such-dag"},  # forbidden before looked up
        ]:
            answer = await reader.request({**request, "requestId": "x"})
            assert (answer["type"], answer["code"], answer["requestId"]) == (
                "error",
                "forbidden",
                "x",
            )
        assert (await reader.request({"type": "ping"}))["type"] == "pong"
        runs = (await reader.request({"type": "list_runs", "dagId": "beta"}))["runs"]
        assert [r["runId"] for r in runs] == [run_id]  # the refused trigger queued nothing


async def test_tokens_by_sha256_and_by_environment(
    tmp_path: Path, aio: Aio, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    monkeypatch.setenv("DAGD_TEST_WS_TOKEN", "env-secret")
    tokens = f"""
[[auth.tokens]]
role = "read"
sha256 = "{digest}"

[[auth.tokens]]
role = "operate"
env = "DAGD_TEST_WS_TOKEN"
"""
    async with harness(tmp_path, aio, tokens=tokens) as h:
        for kind in KINDS:
            client = await h.connect(kind, token="hashed-secret")
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            client = await h.connect(kind, token="env-secret")
            assert (await client.request({"type": "trigger", "dagId": "beta"}))[
                "type"
            ] == "triggered"
        for wrong in [digest, digest.upper(), "DAGD_TEST_WS_TOKEN", OP_TOKEN]:
            h.forgive()
            client = await h.connect("asyncio", token=None)
            await client.send({"type": "auth", "token": wrong})
            code, _reason, frames = await client.closed(timeout=15)
            assert code == 1008
            assert frames[0]["code"] == "auth_failed"
    # The environment is read at start: the variable's value, not its name, is the token.
    roles = [
        (e.role, e.name)
        for e in TokenBook.from_config(make_config(tmp_path, tokens=tokens)).entries
    ]
    assert roles == [("read", "read"), ("operate", "operate")]


async def test_token_from_an_unset_environment_variable_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGD_TEST_WS_UNSET", raising=False)
    tokens = '[[auth.tokens]]\nenv = "DAGD_TEST_WS_UNSET"\n'
    with pytest.raises(ValueError, match="DAGD_TEST_WS_UNSET"):
        TokenBook.from_config(make_config(tmp_path, tokens=tokens))


async def test_generated_token_file(tmp_path: Path, aio: Aio) -> None:
    config = make_config(tmp_path, tokens=None)
    async with harness(tmp_path, aio, config=config) as h:
        path = config.state_dir / "token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        assert len(token) >= 32
        for kind in KINDS:
            client = await h.connect(kind, token=token)
            answer = await client.request({"type": "trigger", "dagId": "beta"})
            assert answer["type"] == "triggered"
    # A restart keeps the token (clients keep working), and the file keeps its mode.
    async with harness(tmp_path, aio, config=config) as h:
        assert path.read_text().strip() == token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = await h.connect("trio", token=token)
        assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert os.stat(path).st_uid == os.getuid()


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
async def test_an_empty_token_file_is_never_an_empty_token(
    tmp_path: Path, aio: Aio, content: str
) -> None:
    """A token file left empty (say the daemon died between creating and writing it) must not
    make the empty string a valid operate token: a new token is generated instead."""
    config = make_config(tmp_path, tokens=None)
    path = config.state_dir / "token"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    async with harness(tmp_path, aio, config=config) as h:
        for token in ["", content]:
            client = await h.connect("trio", token=None)
            await client.send({"type": "auth", "token": token})
            code, _reason, frames = await client.closed(timeout=10)
            assert (code, frames[0]["code"]) == (1008, "auth_failed")
            h.forgive()
        token = path.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = await h.connect("asyncio", token=token)
        assert (await client.request({"type": "ping"}))["type"] == "pong"


# ------------------------------------------------------------------ requests


@pytest.mark.parametrize("kind", KINDS)
async def test_every_answer_echoes_the_request_id(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        run_id = (await client.request({"type": "trigger", "dagId": "slow"}))["runId"]
        failed = (await client.request({"type": "trigger", "dagId": "failing"}))["runId"]
        await h.run_status(failed, "failed")
        requests = [
            ({"type": "subscribe", "dagIds": ["alpha"]}, "subscribed"),
            ({"type": "unsubscribe", "dagIds": ["alpha"]}, "unsubscribed"),
            ({"type": "replay", "since": 0}, "replay_complete"),
            ({"type": "snapshot"}, "snapshot_complete"),
            ({"type": "trigger", "dagId": "beta"}, "triggered"),
            ({"type": "cancel", "runId": run_id}, "cancel_accepted"),
            ({"type": "retry", "runId": failed}, "retry_accepted"),
            ({"type": "list_dags"}, "dags"),
            ({"type": "list_runs"}, "runs"),
            ({"type": "ping"}, "pong"),
            ({"type": "auth", "token": OP_TOKEN}, "error"),
            ({"type": "nope"}, "error"),
            ({"type": "ping", "bogus": 1}, "error"),
            ({"type": "cancel", "runId": "missing"}, "error"),
        ]
        request_ids = ["req", 0, -(2**62), "", "\u00e9\u4e2d", 2**63, "x" * 200]
        for i, (request, expected) in enumerate(requests):
            rid = request_ids[i % len(request_ids)]
            await client.send({**request, "requestId": rid})
            with trio.fail_after(10):
                while True:
                    answer = await client.recv()
                    if "requestId" in answer:
                        break
                    # all that comes between: events (of the stream, or sent by the
                    # replay/snapshot before its *_complete)
                    assert "data" in answer, answer
            assert answer["requestId"] == rid
            assert answer["type"] == expected, (request, answer)


@pytest.mark.parametrize("kind", KINDS)
async def test_subscribe_and_unsubscribe_answer_the_full_sorted_set(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)

        async def ask(kind_: str, dag_ids: list[str]) -> list[str]:
            answer = await client.request({"type": kind_, "dagIds": dag_ids})
            assert answer["type"] == kind_ + "d"
            return answer["dagIds"]

        assert await ask("subscribe", ["beta", "alpha"]) == ["alpha", "beta"]
        assert await ask("subscribe", ["alpha", "zeta"]) == ["alpha", "beta", "zeta"]
        assert await ask("subscribe", ["*"]) == ["*", "alpha", "beta", "zeta"]
        assert await ask("unsubscribe", ["*", "zeta"]) == ["alpha", "beta"]
        assert await ask("unsubscribe", ["not-subscribed"]) == ["alpha", "beta"]
        assert await ask("unsubscribe", ["alpha", "beta"]) == []
        assert await ask("subscribe", ["dup", "dup"]) == ["dup"]


BAD_REQUESTS = [
    ("not json", "invalid_message"),
    ("", "invalid_message"),
    ("{", "invalid_message"),
    ("null", "invalid_message"),
    ("[]", "invalid_message"),
    ('"ping"', "invalid_message"),
    ("{}", "invalid_message"),
    ('{"type": null}', "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"type": "PING"}', "unknown_type"),
    ('{"type": "heartbeat"}', "unknown_type"),
    ('{"type": "dag_run_status"}', "unknown_type"),
    ('{"type": "ping", "extra": 1}', "invalid_message"),
    ('{"type": "ping", "requestId": 1.5}', "invalid_message"),
    ('{"type": "ping", "requestId": [1]}', "invalid_message"),
    ('{"type": "subscribe"}', "invalid_message"),
    ('{"type": "subscribe", "dagIds": []}', "invalid_message"),
    ('{"type": "subscribe", "dagIds": "alpha"}', "invalid_message"),
    ('{"type": "subscribe", "dagIds": [1]}', "invalid_message"),
    ('{"type": "unsubscribe", "dagIds": null}', "invalid_message"),
    ('{"type": "replay"}', "invalid_message"),
    ('{"type": "replay", "since": "5"}', "invalid_message"),
    ('{"type": "replay", "since": -1}', "invalid_message"),
    ('{"type": "replay", "since": 1.0}', "invalid_message"),
    ('{"type": "replay", "since": true}', "invalid_message"),
    ('{"type": "replay", "since": NaN}', "invalid_message"),
    ('{"type": "ping", "type": "ping"}', "invalid_message"),  # a repeated key
    ('{"type": "trigger", "dagId": "alpha", "params": {"a": "1", "a": "2"}}', "invalid_message"),
    ('{"type": "replay", "since": Infinity}', "invalid_message"),
    ('{"type": "replay", "since": 1e999999}', "invalid_message"),
    ('{"type": "trigger"}', "invalid_message"),
    ('{"type": "trigger", "dagId": "alpha", "params": []}', "invalid_message"),
    ('{"type": "trigger", "dagId": "alpha", "params": {"a": null}}', "invalid_message"),
    ('{"type": "trigger", "dagId": "alpha", "params": {"a": {"b": 1}}}', "invalid_message"),
    ('{"type": "trigger", "dagId": "\\ud800"}', "invalid_message"),
    ('{"type": "cancel", "runId": 5}', "invalid_message"),
    ('{"type": "retry"}', "invalid_message"),
    ('{"type": "list_runs", "limit": 0}', "invalid_message"),
    ('{"type": "list_runs", "limit": 1001}', "invalid_message"),
    ('{"type": "list_runs", "limit": "5"}', "invalid_message"),
    ('{"type": "list_runs", "dagId": 5}', "invalid_message"),
    ('{"type": "snapshot", "dagIds": ["alpha"]}', "invalid_message"),
    ('{"type": "ping", "requestId": "' + "x" * 201 + '"}', "invalid_message"),
    ("[" * 20000 + "]" * 20000, "invalid_message"),
    ('{"type": "ping", "x": ' + "[" * 20000 + "]" * 20000 + "}", "invalid_message"),
    (b'{"type": "ping"}', "invalid_message"),  # binary frames are refused
]


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_requests_are_answered_and_the_connection_stays_open(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        for text, code in BAD_REQUESTS:
            await client.send(text)
            answer = await client.recv()
            assert (answer["type"], answer["code"]) == ("error", code), (text[:80], answer)
            assert answer["message"]
            assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("kind", KINDS)
async def test_errors_echo_the_request_id_when_it_can_be_read(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        for text, rid in [
            ('{"type": "nope", "requestId": "a"}', "a"),
            ('{"type": "ping", "extra": 1, "requestId": 3}', 3),
            ('{"type": "subscribe", "dagIds": [], "requestId": "b"}', "b"),
            ('{"requestId": "c"}', "c"),
            ('{"type": "replay", "since": -5, "requestId": 0}', 0),
            ('{"type": "ping", "requestId": 1.5}', None),  # not a valid id: not echoed
            ('{"type": "ping", "requestId": "' + "y" * 201 + '"}', None),
        ]:
            await client.send(text)
            answer = await client.recv()
            assert answer["type"] == "error"
            assert answer.get("requestId") == rid, text


@pytest.mark.parametrize("kind", KINDS)
async def test_second_auth_is_refused_but_harmless(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind, token=READ_TOKEN)
        answer = await client.request({"type": "auth", "token": OP_TOKEN, "requestId": 1})
        assert (answer["code"], answer["requestId"]) == ("invalid_message", 1)
        # ... and it did not upgrade the role
        answer = await client.request({"type": "trigger", "dagId": "beta"})
        assert answer["code"] == "forbidden"


async def test_trigger_cancel_retry_and_their_errors(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect("asyncio")
        await client.request({"type": "subscribe", "dagIds": ["*"]})

        async def ask(request: dict) -> dict:
            return await client.request(request)

        # trigger
        answer = await ask({"type": "trigger", "dagId": "slow"})
        assert answer["type"] == "triggered" and answer["dagId"] == "slow"
        slow = answer["runId"]
        assert slow.startswith("manual__")
        await wait_run(client, slow, "running")
        assert (await ask({"type": "trigger", "dagId": "nope"}))["code"] == "unknown_dag"
        answer = await ask({"type": "trigger", "dagId": "withparams", "params": {"bogus": 1}})
        assert answer["code"] == "invalid_params"
        answer = await ask({"type": "trigger", "dagId": "withparams", "params": {"date": 20240202}})
        assert answer["type"] == "triggered"
        # retry of a run that has not finished
        assert (await ask({"type": "retry", "runId": slow}))["code"] == "not_finished"
        # cancel
        assert await ask({"type": "cancel", "runId": slow}) == {
            "type": "cancel_accepted",
            "runId": slow,
        }
        await wait_run(client, slow, "cancelled")
        assert (await ask({"type": "cancel", "runId": slow}))["code"] == "not_running"
        assert (await ask({"type": "cancel", "runId": "manual__x"}))["code"] == "unknown_run"
        # retry of a cancelled run reruns it under the same id
        assert await ask({"type": "retry", "runId": slow}) == {
            "type": "retry_accepted",
            "runId": slow,
        }
        await wait_run(client, slow, "running")
        assert (await ask({"type": "cancel", "runId": slow}))["type"] == "cancel_accepted"
        await wait_run(client, slow, "cancelled")
        # retry of a failed run; of a successful one; of an unknown one
        failed = (await ask({"type": "trigger", "dagId": "failing"}))["runId"]
        await wait_run(client, failed, "failed")
        assert (await ask({"type": "retry", "runId": failed}))["type"] == "retry_accepted"
        await wait_run(client, failed, "failed")
        ok = (await ask({"type": "trigger", "dagId": "beta"}))["runId"]
        await wait_run(client, ok, "success")
        assert (await ask({"type": "retry", "runId": ok}))["code"] == "not_retryable"
        assert (await ask({"type": "retry", "runId": "manual__x"}))["code"] == "unknown_run"
        # the connection survived all of it
        assert (await ask({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("kind", KINDS)
async def test_list_dags_and_list_runs(tmp_path: Path, aio: Aio, kind: str) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect(kind)
        dags = (await client.request({"type": "list_dags"}))["dags"]
        assert [d["dagId"] for d in dags] == ["alpha", "beta", "failing", "slow", "withparams"]
        alpha = dags[0]
        assert alpha == {
            "dagId": "alpha",
            "description": "two quick python steps",
            "schedule": None,
            "nextRun": None,
            "steps": ["one", "two"],
            "tags": ["test", "quick"],
            "params": {},
            "timezone": "UTC",
            "paused": False,
            "fileError": None,
        }
        assert dags[-1]["params"] == {"date": "2024-01-01"}
        run_ids = []
        for _ in range(3):
            run_ids.append((await client.request({"type": "trigger", "dagId": "beta"}))["runId"])
        for run_id in run_ids:
            await h.run_status(run_id, "success")
        alpha_run = (await client.request({"type": "trigger", "dagId": "alpha"}))["runId"]
        await h.run_status(alpha_run, "queued", "running", "success")
        runs = (await client.request({"type": "list_runs"}))["runs"]
        assert len(runs) == 4
        assert runs[0]["runId"] == alpha_run
        runs = (await client.request({"type": "list_runs", "dagId": "beta", "limit": 2}))["runs"]
        assert [r["runId"] for r in runs] == run_ids[::-1][:2]  # newest first
        run = runs[0]
        assert set(run) == {
            "dagId",
            "runId",
            "status",
            "params",
            "queuedAt",
            "startedAt",
            "endedAt",
        }
        assert run["status"] == "success" and run["dagId"] == "beta"
        assert run["queuedAt"].endswith("Z") and run["endedAt"].endswith("Z")
        # a DAG neither loaded nor with any run is an error, naming the loaded ones
        none = await client.request({"type": "list_runs", "dagId": "no-such-dag"})
        assert none["type"] == "error" and none["code"] == "unknown_dag"
        assert "no DAG 'no-such-dag'" in none["message"] and "alpha" in none["message"]
        # a loaded DAG without runs is not
        empty = await client.request({"type": "list_runs", "dagId": "slow"})
        assert empty == {"type": "runs", "runs": []}


async def test_list_dags_lists_broken_files_with_their_problems(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio) as h:
        client = await h.connect("trio")
        answer = await client.request({"type": "list_dags"})
        assert answer["brokenFiles"] == []
        broken = h.daemon.config.dags_dir / "broken.toml"
        broken.write_text('[steps.a]\ncommand = "true"\ntimeout = "soon"\n')
        await h.daemon.reload()
        answer = await client.request({"type": "list_dags"})
        assert "broken" not in [d["dagId"] for d in answer["dags"]]
        [entry] = answer["brokenFiles"]
        assert entry["file"] == str(broken) and entry["dagId"] is None
        [problem] = entry["problems"]
        assert (problem["step"], problem["field"]) == ("a", "timeout")
        assert "soon" in problem["message"]


# ------------------------------------------------------------ limits, closes


@pytest.mark.parametrize("kind", KINDS)
async def test_message_over_max_message_size_bytes_closes_1009(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio, server="max_message_size = 1000") as h:
        client = await h.connect(kind)
        # 900 bytes: fine (an error, the connection stays)
        await client.send(json.dumps({"type": "ping", "pad": "x" * 870}))
        assert (await client.recv())["code"] == "invalid_message"
        # 300 euro signs are 900 bytes: fine
        await client.send(json.dumps({"type": "ping", "pad": "\u20ac" * 290}, ensure_ascii=False))
        assert (await client.recv())["code"] == "invalid_message"
        # 400 euro signs are 400 characters but 1200 bytes: the limit is in bytes
        await client.send(json.dumps({"type": "ping", "pad": "\u20ac" * 400}, ensure_ascii=False))
        code, _reason, frames = await client.closed()
        assert code == 1009
        assert frames == []
        # before auth too, and for plain ASCII and binary frames
        for big in ["x" * 1001, b"x" * 1001, "\u20ac" * 400]:
            client = await h.connect(kind, token=None)
            await client.send(big)
            code, _reason, frames = await client.closed()
            assert code == 1009, big[:10]
            assert frames == []


@pytest.mark.parametrize("kind", KINDS)
async def test_flooding_is_rate_limited_then_closed_1008(
    tmp_path: Path, aio: Aio, kind: str
) -> None:
    async with harness(tmp_path, aio, server="rate_limit = 10") as h:
        client = await h.connect(kind)
        # The bucket holds 20: the first 20 pings are answered, the next ones are dropped
        # with one warning, and 20 more close the connection.
        for i in range(60):
            with contextlib.suppress(Exception):  # sends after the close may fail
                await client.send({"type": "ping", "requestId": i})
        code, reason, frames = await client.closed()
        assert code == 1008
        assert "rate" in reason
        answered = [f["requestId"] for f in frames if f["type"] == "pong"]
        assert answered[:20] == list(range(20))
        assert len(answered) < 30
        errors = [f["code"] for f in frames if f["type"] == "error"]
        # warned once per run of refused messages (a refill between sends may start another)
        assert errors and set(errors) == {"rate_limited"} and len(errors) <= 3
        if kind == "trio":
            # 25 requests in 1.25 s stay within 10/s with bursts of 20
            polite = await h.connect(kind)
            for i in range(25):
                assert (await polite.request({"type": "ping", "requestId": i}))["type"] == "pong"
                await trio.sleep(0.05)


async def test_repeated_auth_failures_are_slowed_down(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio) as h:
        elapsed = []
        for token in ["wrong-1", "wrong-2", "wrong-3", OP_TOKEN]:
            client = await h.connect("trio", token=None)
            start = trio.current_time()
            await client.send({"type": "auth", "token": token})
            answer = await client.recv()
            elapsed.append(trio.current_time() - start)
            assert answer["type"] == ("auth_success" if token == OP_TOKEN else "error")
        assert elapsed[0] < 0.2
        assert 0.2 <= elapsed[1] < 1.0  # 0.25 s
        assert 0.45 <= elapsed[2] < 1.5  # 0.5 s
        # Issue 10: only failures wait (after the check); a right token is answered at once
        assert elapsed[3] < 0.2
        # ... and a success resets the count
        client = await h.connect("trio", token=None)
        start = trio.current_time()
        await client.send({"type": "auth", "token": OP_TOKEN})
        assert (await client.recv())["type"] == "auth_success"
        assert trio.current_time() - start < 0.2


# ---------------------------------------------------------------------------------- TLS


@needs_openssl
async def test_tls_serves_wss_with_the_configured_certificate(tmp_path: Path) -> None:
    """server.tls_cert/tls_key: the endpoint is wss://, a client that trusts the certificate
    authenticates and gets events; a plain ws:// client gets no WebSocket at all."""
    self_signed_cert(tmp_path)
    config = make_config(tmp_path, server='tls_cert = "cert.pem"\ntls_key = "key.pem"')
    async with running(tmp_path, config=config) as daemon:
        url = url_of(daemon)
        assert url.startswith("wss://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        async with open_websocket_url(url, ssl_context=context, connect_timeout=5) as ws:
            await ws.send_message(json.dumps({"type": "auth", "token": OP_TOKEN}))
            assert json.loads(await ws.get_message())["type"] == "auth_success"
            await ws.send_message(json.dumps({"type": "subscribe", "dagIds": ["*"]}))
            assert json.loads(await ws.get_message())["type"] == "subscribed"
            await ws.send_message(json.dumps({"type": "trigger", "dagId": "alpha"}))
            assert json.loads(await ws.get_message())["type"] == "triggered"
            event = json.loads(await ws.get_message())
            assert (event["type"], event["data"]["status"]) == ("dag_run_status", "queued")
        # Plain HTTP to the TLS port: no "101 Switching Protocols", the connection just ends.
        port = urlsplit(url).port
        assert port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            received = b""
            with trio.fail_after(5):
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(4096):
                        received += chunk
            assert b"101" not in received
        # ... and the server carries on
        async with open_websocket_url(url, ssl_context=context, connect_timeout=5) as ws:
            await ws.send_message(json.dumps({"type": "auth", "token": OP_TOKEN}))
            assert json.loads(await ws.get_message())["type"] == "auth_success"


@pytest.mark.parametrize("authenticated", [False, True])
async def test_text_frame_that_is_not_utf8_fails_the_connection_with_1007(
    tmp_path: Path, aio: Aio, authenticated: bool
) -> None:
    # RFC 6455 8.1: fail the WebSocket connection; 7.4.1: with 1007. The `websockets` client
    # sends the bytes as a text frame without checking them.
    async with harness(tmp_path, aio) as h:
        other = await h.connect("asyncio")
        client = await h.connect("asyncio", token=OP_TOKEN if authenticated else None)
        assert isinstance(client, AioWS)
        await aio.run(client.conn.send(b'{"type": "ping", "requestId": "\xff"}', text=True))
        code, _reason, frames = await client.closed()
        assert (code, frames) == (1007, [])
        assert (await other.request({"type": "ping", "requestId": 1}))["type"] == "pong"
