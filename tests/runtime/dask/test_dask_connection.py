"""The Dask connection's life cycle around a connect thread that keep() stopped waiting for
(no cluster: a stand-in for Dask's Client that the test holds inside its constructor)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import trio
import trio.testing
from conftest import NEEDS_DASK

pytest.importorskip("distributed", reason=NEEDS_DASK)

from dagd.core.config import DaskExecutorConfig
from dagd.runtime.dask import connection


class HeldClient:
    """Made only once the test lets it; records whether it was closed."""

    release = threading.Event()
    made: list[HeldClient] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        assert HeldClient.release.wait(10)
        self.status = "running"
        self.closed = False
        HeldClient.made.append(self)

    def close(self) -> None:
        self.closed = True
        self.status = "closed"


async def test_a_client_made_after_keep_was_cancelled_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "Client", HeldClient)
    HeldClient.release.clear()
    HeldClient.made.clear()

    async def on_connected(client: Any) -> None:
        raise AssertionError("a cancelled keep() must not use a client")

    conn = connection.Connection(DaskExecutorConfig("tcp://127.0.0.1:1"), on_connected)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.keep)
        await trio.testing.wait_all_tasks_blocked()  # its thread is inside Client()
        nursery.cancel_scope.cancel()
    HeldClient.release.set()  # the abandoned thread finishes making it now
    with trio.fail_after(5):
        while not (HeldClient.made and HeldClient.made[0].closed):
            await trio.sleep(0.01)
    assert conn.client is None


class FlakyClient:
    """A stand-in client whose scheduler the test takes away and brings back; the first
    one made fails, as an unreachable scheduler does."""

    made: list[FlakyClient] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not FlakyClient.made:
            FlakyClient.made.append(self)
            raise OSError("connection refused")
        self.status = "running"
        FlakyClient.made.append(self)

    def close(self) -> None:
        self.status = "closed"


async def test_the_connection_says_when_the_scheduler_is_lost_and_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection, "Client", FlakyClient)
    FlakyClient.made.clear()
    caplog.set_level(logging.INFO, "dagd.runtime.dask")
    connected: list[Any] = []

    async def on_connected(client: Any) -> None:
        connected.append(client)

    address = "tcp://127.0.0.1:1"
    conn = connection.Connection(
        DaskExecutorConfig(address), on_connected, reconnect_interval=0.01, check_interval=0.01
    )

    def lines() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records]

    async with trio.open_nursery() as nursery:
        await nursery.start(conn.keep)
        with trio.fail_after(5):
            while len(connected) < 1:
                await trio.sleep(0.01)
            client = connected[0]
            client.status = "connecting"  # a graceful stop: Dask's client tries to reconnect
            while conn.client is not None or len(lines()) < 3:
                await trio.sleep(0.01)
            client.status = "running"
            while len(connected) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert lines() == [
        (logging.WARNING, f"dask scheduler unreachable: {address}"),
        (logging.INFO, f"connected to the dask scheduler {address}"),
        (logging.WARNING, f"lost the dask scheduler {address}; reconnecting"),
        (logging.WARNING, f"the dask scheduler {address} is back"),
    ]
