"""The Dask connection's life cycle around a connect thread that keep() stopped waiting for
(no cluster: a stand-in for Dask's Client that the test holds inside its constructor)."""

from __future__ import annotations

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
