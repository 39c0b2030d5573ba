"""Bearer tokens on plain HTTP routes: the WebSocket's tokens, roles and failure throttle."""

from __future__ import annotations

import hashlib

import orjson
import pytest
import trio
import trio.testing

from dagd.net.auth import AuthThrottle, TokenBook, TokenEntry
from dagd.net.http.bearer import bearer_entry, peer_host
from dagd.net.http.message import HttpRequest, HttpResponse

OPERATE, READ = "operate-secret", "read-secret"
BOOK = TokenBook(
    [
        TokenEntry(hashlib.sha256(OPERATE.encode()).digest(), "operate", "ops"),
        TokenEntry(hashlib.sha256(READ.encode()).digest(), "read", "viewer"),
    ]
)


def request(authorization: str | None = None, peer: str = "10.0.0.7:40000") -> HttpRequest:
    headers = {} if authorization is None else {"authorization": authorization}
    return HttpRequest("GET", "/api/v1/dags", headers=headers, peer=peer)


def refusal(found: TokenEntry | HttpResponse) -> tuple[int, str, dict[str, str]]:
    assert isinstance(found, HttpResponse)
    return found.status, orjson.loads(found.body)["code"], dict(found.headers)


@pytest.mark.parametrize(
    ("header", "role"),
    [(f"Bearer {OPERATE}", "operate"), (f"bearer {READ}", "read"), (f"  BEARER   {READ} ", "read")],
)
async def test_a_right_token_gives_its_entry(header: str, role: str) -> None:
    found = await bearer_entry(BOOK, AuthThrottle(), request(header))
    assert isinstance(found, TokenEntry)
    assert found.role == role


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer   ", f"Basic {OPERATE}", f"Token {OPERATE}", OPERATE]
)
async def test_no_bearer_header_is_auth_required(header: str | None) -> None:
    status, code, headers = refusal(await bearer_entry(BOOK, AuthThrottle(), request(header)))
    assert (status, code) == (401, "auth_required")
    assert headers["www-authenticate"] == 'Bearer realm="dagd"'
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "token", ["wrong", OPERATE + "x", OPERATE[:-1], f"{OPERATE}, Bearer {READ}", "\udc80\x00"]
)
async def test_a_wrong_token_is_auth_failed(token: str) -> None:
    status, code, headers = refusal(
        await bearer_entry(BOOK, AuthThrottle(), request(f"Bearer {token}"))
    )
    assert (status, code) == (401, "auth_failed")
    assert headers["www-authenticate"] == 'Bearer realm="dagd", error="invalid_token"'


async def test_repeated_failures_from_one_address_wait_and_a_right_token_never_does(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = 0
    throttle = AuthThrottle(clock=trio.current_time)
    waits = []
    for port in range(40000, 40004):  # one address, new connections
        before = trio.current_time()
        await bearer_entry(BOOK, throttle, request("Bearer wrong", f"10.0.0.7:{port}"))
        waits.append(trio.current_time() - before)
    assert waits == [0.0, 0.25, 0.5, 1.0]
    before = trio.current_time()
    other = await bearer_entry(BOOK, throttle, request("Bearer wrong", "10.0.0.8:1"))
    assert trio.current_time() == before  # another address has its own count
    assert isinstance(other, HttpResponse)
    right = await bearer_entry(BOOK, throttle, request(f"Bearer {READ}", "10.0.0.7:9"))
    assert isinstance(right, TokenEntry) and trio.current_time() == before
    await bearer_entry(BOOK, throttle, request("Bearer wrong", "10.0.0.7:10"))
    assert trio.current_time() == before  # the right token cleared the address's failures


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("[::1]:5000", "::1"),
        ("::1", "::1"),
        ("/run/dagd.sock", "/run/dagd.sock"),
        ("", ""),
    ],
)
def test_peer_host_is_the_address_without_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host
