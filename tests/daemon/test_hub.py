"""The hub alone: each subscriber's bounded queue, and its reader's wake-up and end."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from dagd.core.events import ErrorEvent
from dagd.daemon.hub import Hub
from dagd.daemon.store import StoredEvent


def test_a_subscriber_owns_a_bounded_queue() -> None:
    # queued() is what the WebSocket fast path asks before writing past the queue: it must
    # count every item, and a full queue must refuse (the hub then cuts the subscriber off).
    sub = Hub().subscribe(None, 3)
    stored = [
        StoredEvent(i, "d", ErrorEvent("d", None, None, "e", 1.0, seq=i), "t") for i in range(1, 4)
    ]
    for n, item in enumerate(stored, 1):
        sub.put_nowait(item)
        assert sub.queued() == n
    with pytest.raises(trio.WouldBlock):
        sub.put_nowait(stored[0])
    assert sub.get_nowait() is stored[0]
    assert sub.queued() == 2
    sub.close()
    with pytest.raises(trio.ClosedResourceError):
        sub.put_nowait(stored[0])
    assert [sub.get_nowait(), sub.get_nowait()] == stored[1:]  # what it held, then the end
    with pytest.raises(trio.EndOfChannel):
        sub.get_nowait()


async def test_a_subscriber_wakes_its_reader_and_ends_it_on_close() -> None:
    sub = Hub().subscribe(None, 8)
    got: list[object] = []

    async def read() -> None:
        with contextlib.suppress(trio.EndOfChannel):
            while True:
                got.append(await sub.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        sub.put_nowait("a")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["a"]
        sub.put_nowait("b")
        sub.close()
    assert got == ["a", "b"]
